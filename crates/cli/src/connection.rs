//! `filetrail connection …`: register a Microsoft 365 tenant (checking its credentials and
//! permissions first), list, show, deauthorize, resume and remove connections.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use chrono::{DateTime, Utc};
use filetrail_core::jobs::DiscoverJob;
use filetrail_core::model::{Connection, ConnectionKind, ConnectionState, DriveState, Endpoints};
use filetrail_core::ports::{DiscoverQueue, StateStore};
use filetrail_m365::probe::{self, ProbeKind, ProbeReport};
use filetrail_m365::{
    ActivityClient, ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, M365Error, RetryPolicy, http_client,
};
use serde::Serialize;

/// Default drive cap: generous, so the cap protects against a mis-scoped tenant rather than
/// limiting a real one (issue: scope).
pub const DEFAULT_DRIVE_CAP: u64 = 1_000_000;

/// What an admin gives to register a tenant.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub id: String,
    pub kind: ConnectionKind,
    pub tenant_id: String,
    pub client_id: String,
    pub cloud: String,
    pub endpoints: Option<Endpoints>,
    pub trusted_domains: Vec<String>,
    pub drive_cap: u64,
}

impl NewConnection {
    /// The settings of a registered connection, to check a new secret the way `add` checks
    /// the first.
    pub fn of(connection: &Connection) -> Self {
        Self {
            id: connection.id.clone(),
            kind: connection.kind,
            tenant_id: connection.tenant_id.clone(),
            client_id: connection.client_id.clone(),
            cloud: connection.cloud.clone(),
            endpoints: connection.endpoints.clone(),
            trusted_domains: connection.trusted_domains.clone(),
            drive_cap: connection.drive_cap,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionAddError {
    #[error(
        "connection id {0:?} is not valid: use 1-48 lowercase letters, digits and dashes, starting with a letter (e.g. `contoso-cloud`)"
    )]
    BadId(String),
    #[error(
        "connection id {0:?} is taken by filetrail: scoping/{0}/ holds the results of uploads that name no connection; choose another id"
    )]
    ReservedId(String),
    #[error("a connection named {0:?} already exists; choose another id or remove it first")]
    IdTaken(String),
    #[error(
        "tenant {tenant} was registered as {existing:?}, removed with its history kept; delete that history with \
         `filetrail connection remove {existing} --purge`, then register the tenant again"
    )]
    TenantOfRemoved { tenant: String, existing: String },
    #[error(
        "{0:?} names a removed connection whose history is kept and searchable; choose another id, or delete that \
         history first with `filetrail connection remove {0} --purge`"
    )]
    IdOfRemoved(String),
    #[error(
        "tenant {tenant} is already registered as a {kind} connection ({existing:?}); a tenant can be registered once per kind: use {existing:?}, or remove it first (`filetrail connection remove {existing}`)"
    )]
    AlreadyRegistered {
        tenant: String,
        kind: String,
        existing: String,
    },
    #[error(
        "--tenant-id {0:?} is not a directory id: with --skip-checks give the tenant's Directory (tenant) ID, a GUID \
         (Entra admin center > Overview > Tenant ID), or drop --skip-checks and filetrail reads it from the app's token"
    )]
    TenantNotAnId(String),
    #[error(transparent)]
    Store(#[from] filetrail_core::PortError),
}

/// Checks a connection id: it appears in keys, secret names and on the command line.
pub fn validate_id(id: &str) -> Result<(), ConnectionAddError> {
    let ok = (1..=48).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if id == filetrail_core::apply_scope::RESULTS_FOLDER {
        Err(ConnectionAddError::ReservedId(id.to_owned()))
    } else if ok {
        Ok(())
    } else {
        Err(ConnectionAddError::BadId(id.to_owned()))
    }
}

/// Refuses a duplicate id or a tenant already registered with the same kind.
pub async fn check_unique(state: &dyn StateStore, new: &NewConnection) -> Result<(), ConnectionAddError> {
    validate_id(&new.id)?;
    for c in state.connections().await? {
        if c.id == new.id && c.state == ConnectionState::Removed {
            return Err(ConnectionAddError::IdOfRemoved(new.id.clone()));
        }
        if c.id == new.id {
            return Err(ConnectionAddError::IdTaken(new.id.clone()));
        }
        if c.kind == new.kind && c.tenant_id.eq_ignore_ascii_case(&new.tenant_id) && c.state == ConnectionState::Removed
        {
            // Its drives and checkpoints are still recorded under the tenant's ids.
            return Err(ConnectionAddError::TenantOfRemoved {
                tenant: new.tenant_id.clone(),
                existing: c.id,
            });
        }
        if c.kind == new.kind && c.tenant_id.eq_ignore_ascii_case(&new.tenant_id) {
            return Err(ConnectionAddError::AlreadyRegistered {
                tenant: new.tenant_id.clone(),
                kind: format!("{:?}", new.kind).to_lowercase(),
                existing: c.id,
            });
        }
    }
    Ok(())
}

/// Whether `tenant` is a directory id (a GUID), not a domain name.
pub fn is_tenant_guid(tenant: &str) -> bool {
    let groups: Vec<&str> = tenant.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Refuses a tenant named by its domain when the credentials are not checked: only a token
/// tells which directory a domain names, and a tenant is registered once per kind by its id.
pub fn require_tenant_guid(tenant: &str) -> Result<(), ConnectionAddError> {
    if is_tenant_guid(tenant) {
        Ok(())
    } else {
        Err(ConnectionAddError::TenantNotAnId(tenant.to_owned()))
    }
}

/// The record stored for a new connection whose secret lives at `secret_id`.
pub fn record(new: &NewConnection, secret_id: String) -> Connection {
    Connection {
        id: new.id.clone(),
        kind: new.kind,
        tenant_id: new.tenant_id.clone(),
        client_id: new.client_id.clone(),
        secret_id,
        cloud: new.cloud.clone(),
        endpoints: new.endpoints.clone(),
        trusted_domains: new.trusted_domains.clone(),
        drive_cap: new.drive_cap,
        state: ConnectionState::Active,
        last_error: None,
        last_discovery: None,
        created_at: Utc::now(),
        write_app: None,
    }
}

/// Why a registration's credential check refused the connection (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Entra ID refused a token: wrong tenant, client id or secret.
    #[error("Entra ID refused the app's credentials: {summary}\nfix: {fix}\nNothing was stored.")]
    Credentials { summary: String, fix: String },
    /// The app lacks permissions, or a check failed.
    #[error("{problems}Nothing was stored.")]
    Permissions { problems: String },
    /// The connection's cloud settings are invalid.
    #[error("{0}")]
    Config(M365Error),
}

/// Checks a new connection's credentials at once, as the README's registration steps promise: a
/// Graph token, then one call per permission (see [`filetrail_m365::probe`]). `Ok` carries the
/// report (its notes say what could not be checked); `Err` says what to fix.
pub async fn check_credentials(new: &NewConnection, secret: &str) -> Result<ProbeReport, CheckError> {
    let cloud = Cloud::for_connection(&new.cloud, new.endpoints.as_ref()).map_err(CheckError::Config)?;
    let http = http_client(HttpTimeouts::default()).map_err(CheckError::Config)?;
    let credentials = Credentials {
        tenant_id: new.tenant_id.clone(),
        client_id: new.client_id.clone(),
        secret: ClientSecret::new(secret),
    };
    let policy = RetryPolicy::default();
    let graph = GraphClient::connect(http.clone(), &cloud, credentials.clone(), &new.id, policy.clone())
        .map_err(CheckError::Config)?;
    let activity = ActivityClient::connect(http, &cloud, credentials, &new.id, policy).ok();
    let kind = match new.kind {
        ConnectionKind::Cloud => ProbeKind::Cloud,
        ConnectionKind::Email => ProbeKind::Email,
    };
    let report = match probe::probe(&graph, activity.as_ref(), kind).await {
        Ok(r) => r,
        Err(e) => {
            let fix = probe::registration_fix(&e, &new.tenant_id, &new.client_id)
                .unwrap_or_else(|| "try again in a few minutes".to_owned());
            return Err(CheckError::Credentials {
                summary: e.summary(),
                fix,
            });
        }
    };
    if report.passed() {
        Ok(report)
    } else {
        Err(CheckError::Permissions {
            problems: report.problems(&new.client_id),
        })
    }
}

/// Checks a write-mode app before it is stored: another app than the pipeline's, Entra issues it
/// a Graph token for the connection's tenant, and the token carries `Files.ReadWrite.All`.
/// Returns the write-capable roles the *pipeline's* app holds (`pipeline_secret`), which the
/// caller warns about: with them every function's token can write, whatever write mode does.
pub async fn check_write_app(
    connection: &Connection,
    client_id: &str,
    secret: &str,
    pipeline_secret: &str,
) -> Result<Vec<String>, CheckError> {
    if client_id.trim().eq_ignore_ascii_case(&connection.client_id) {
        return Err(CheckError::Permissions {
            problems: format!(
                "app {client_id} is the pipeline's own app: write mode needs a second app registration, so that \
                 the functions' tokens stay read-only; register one with only Files.ReadWrite.All (README, \"Write mode\")"
            ),
        });
    }
    let cloud = Cloud::for_connection(&connection.cloud, connection.endpoints.as_ref()).map_err(CheckError::Config)?;
    let http = http_client(HttpTimeouts::default()).map_err(CheckError::Config)?;
    let graph_of = |client_id: &str, secret: &str| {
        let credentials = Credentials {
            tenant_id: connection.tenant_id.clone(),
            client_id: client_id.to_owned(),
            secret: ClientSecret::new(secret),
        };
        GraphClient::connect(
            http.clone(),
            &cloud,
            credentials,
            &connection.id,
            RetryPolicy::default(),
        )
        .map_err(CheckError::Config)
    };
    let report = probe::probe_write_app(&graph_of(client_id, secret)?)
        .await
        .map_err(|e| CheckError::Credentials {
            summary: e.summary(),
            fix: probe::registration_fix(&e, &connection.tenant_id, client_id)
                .unwrap_or_else(|| "try again in a few minutes".to_owned()),
        })?;
    if !report.passed() {
        return Err(CheckError::Permissions {
            problems: report.problems(client_id),
        });
    }
    let pipeline = graph_of(&connection.client_id, pipeline_secret)?;
    Ok(match pipeline.tokens().token().await {
        Ok(token) => probe::write_roles(token.secret()),
        Err(_) => Vec::new(),
    })
}

/// Errors of the commands on an existing connection.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("no connection named {0:?}; `filetrail connection list` lists them")]
    Unknown(String),
    #[error("connection {0:?} is already deauthorized; `filetrail connection resume {0}` restarts its work")]
    AlreadyDeauthorized(String),
    #[error("connection {0:?} is active; only a deauthorized connection can be resumed")]
    AlreadyActive(String),
    #[error(
        "connection {0:?} was removed (its credentials are deleted, its history kept): `filetrail connection remove {0} \
         --purge` deletes the history, then the tenant can be registered again"
    )]
    Removed(String),
    #[error(transparent)]
    Store(#[from] filetrail_core::PortError),
}

async fn existing(state: &dyn StateStore, id: &str) -> Result<Connection, ManageError> {
    state
        .connection(id)
        .await?
        .ok_or_else(|| ManageError::Unknown(id.to_owned()))
}

/// Loads a connection or says it does not exist (naming `filetrail connection list`).
pub async fn find(state: &dyn StateStore, id: &str) -> Result<Connection, ManageError> {
    existing(state, id).await
}

/// Stops all work of a connection: every function drops its jobs
/// ([`Connection::accepts_work`]); its history stays searchable. Fails if it is unknown or
/// already deauthorized.
pub async fn deauthorize(state: &dyn StateStore, id: &str) -> Result<Connection, ManageError> {
    let mut c = existing(state, id).await?;
    if c.state == ConnectionState::Removed {
        return Err(ManageError::Removed(id.to_owned()));
    }
    if c.state == ConnectionState::Deauthorized {
        return Err(ManageError::AlreadyDeauthorized(id.to_owned()));
    }
    c.state = ConnectionState::Deauthorized;
    state.put_connection(&c).await?;
    Ok(c)
}

/// Makes a deauthorized connection active again and enqueues a discovery run; indexing and the
/// activity poller continue from their stored checkpoints. Fails if it is unknown or active.
pub async fn resume(state: &dyn StateStore, queue: &dyn DiscoverQueue, id: &str) -> Result<Connection, ManageError> {
    let mut c = existing(state, id).await?;
    if c.state == ConnectionState::Removed {
        return Err(ManageError::Removed(id.to_owned()));
    }
    if c.state == ConnectionState::Active {
        return Err(ManageError::AlreadyActive(id.to_owned()));
    }
    c.state = ConnectionState::Active;
    state.put_connection(&c).await?;
    queue
        .enqueue_discover(&[DiscoverJob::Discover {
            connection: id.to_owned(),
            reason: "resume".to_owned(),
        }])
        .await?;
    Ok(c)
}

/// One row of `filetrail connection list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRow {
    pub id: String,
    pub kind: String,
    pub tenant_id: String,
    pub state: String,
    /// Drives monitored (pending, indexing or indexed).
    pub drives: u64,
    pub created_at: DateTime<Utc>,
    pub write_mode: bool,
}

fn kind_name(kind: ConnectionKind) -> String {
    match kind {
        ConnectionKind::Cloud => "cloud",
        ConnectionKind::Email => "email",
    }
    .to_owned()
}

fn state_name(state: ConnectionState) -> String {
    match state {
        ConnectionState::Active => "active",
        ConnectionState::Deauthorized => "deauthorized",
        ConnectionState::Removed => "removed",
    }
    .to_owned()
}

async fn monitored_drives(state: &dyn StateStore, id: &str) -> Result<u64, ManageError> {
    let mut n = 0;
    for s in [DriveState::Pending, DriveState::Indexing, DriveState::Indexed] {
        n += state.count_drives(id, s).await?;
    }
    Ok(n)
}

/// The rows of `filetrail connection list`, sorted by id.
pub async fn list(state: &dyn StateStore) -> Result<Vec<ConnectionRow>, ManageError> {
    let mut rows = Vec::new();
    for c in state.connections().await? {
        rows.push(ConnectionRow {
            drives: monitored_drives(state, &c.id).await?,
            id: c.id,
            kind: kind_name(c.kind),
            tenant_id: c.tenant_id,
            state: state_name(c.state),
            created_at: c.created_at,
            write_mode: c.write_app.is_some(),
        });
    }
    Ok(rows)
}

/// The table of `filetrail connection list`.
pub fn render_list(rows: &[ConnectionRow]) -> String {
    if rows.is_empty() {
        return "No connections yet. Register one with `filetrail connection add`.\n".to_owned();
    }
    let header = ["ID", "KIND", "TENANT", "STATE", "DRIVES", "CREATED", "WRITE MODE"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.kind.clone(),
                r.tenant_id.clone(),
                r.state.clone(),
                r.drives.to_string(),
                r.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                if r.write_mode { "on" } else { "off" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut l = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(&header.map(str::to_owned));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// What `filetrail connection show` prints: the whole record (it holds only the secret's name,
/// never the secret) and the monitored drive count.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionDetail {
    #[serde(flatten)]
    pub connection: Connection,
    pub drives_monitored: u64,
    pub scope: String,
}

/// Reads one connection for `show`.
pub async fn show(state: &dyn StateStore, id: &str) -> Result<ConnectionDetail, ManageError> {
    let c = existing(state, id).await?;
    let scope = match state.scope(id).await? {
        Some(sc) => format!("{:?} ({} entries)", sc.kind, sc.entries.len()).to_lowercase(),
        None => "all users".to_owned(),
    };
    Ok(ConnectionDetail {
        drives_monitored: monitored_drives(state, id).await?,
        scope,
        connection: c,
    })
}

/// The text of `filetrail connection show`.
pub fn render_show(d: &ConnectionDetail) -> String {
    let c = &d.connection;
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{k:<17}{v}\n"));
    field("id", c.id.clone());
    field("kind", kind_name(c.kind));
    field("state", state_name(c.state));
    field("tenant", c.tenant_id.clone());
    field("client id", c.client_id.clone());
    field("secret", format!("{} (Secrets Manager)", c.secret_id));
    field("cloud", c.cloud.clone());
    if let Some(e) = &c.endpoints {
        field("endpoints", format!("login {} · graph {}", e.login, e.graph));
    }
    field(
        "trusted domains",
        if c.trusted_domains.is_empty() {
            "none (only the tenant's own users count as inside)".to_owned()
        } else {
            c.trusted_domains.join(", ")
        },
    );
    field("drive cap", c.drive_cap.to_string());
    field("drives", format!("{} monitored", d.drives_monitored));
    field("scope", d.scope.clone());
    field(
        "write mode",
        match &c.write_app {
            Some(app) => format!(
                "on since {}: app {} (secret {}) for `filetrail sharing revoke` only",
                app.enabled_at.to_rfc3339(),
                app.client_id,
                app.secret_id
            ),
            None => "off (read only)".to_owned(),
        },
    );
    field("created", c.created_at.to_rfc3339());
    field(
        "last discovery",
        match &c.last_discovery {
            Some(s) => format!(
                "{} ({} users, {} drives found, {} new)",
                s.finished_at.to_rfc3339(),
                s.users_seen,
                s.drives_found,
                s.drives_new
            ),
            None => "never".to_owned(),
        },
    );
    field(
        "last error",
        match &c.last_error {
            Some(e) => format!("{}: {} (fix: {})", e.code, e.message, e.fix),
            None => "none".to_owned(),
        },
    );
    out
}

/// Counts of what `remove --purge` deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub state_items: u64,
    pub inventory_rows: u64,
    pub events: u64,
    /// Scope uploads and results, quarantine documents and event exports of the connection.
    pub objects: u64,
}

/// The DynamoDB tables `remove --purge` clears.
pub struct PurgeTables<'a> {
    pub client: &'a aws_sdk_dynamodb::Client,
    pub state: &'a str,
    pub inventory: &'a str,
    pub events: &'a str,
    /// The deployment's bucket and an S3 client, to delete the connection's objects too.
    pub bucket: Option<(&'a aws_sdk_s3::Client, &'a str)>,
}

/// S3 DeleteObjects takes at most 1,000 keys (Amazon S3 API reference, DeleteObjects).
const DELETE_OBJECTS_MAX: usize = 1000;

/// Keys under `prefix` whose last segment passes `keep`.
async fn list_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await?;
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| keep(k.rsplit('/').next().unwrap_or_default()))
                .map(str::to_owned),
        );
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(keys),
        }
    }
}

async fn delete_objects(s3: &aws_sdk_s3::Client, bucket: &str, keys: &[String]) -> anyhow::Result<u64> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    for chunk in keys.chunks(DELETE_OBJECTS_MAX) {
        let objects = chunk
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()?;
        s3.delete_objects()
            .bucket(bucket)
            .delete(Delete::builder().set_objects(Some(objects)).quiet(true).build()?)
            .send()
            .await?;
    }
    Ok(keys.len() as u64)
}

type Key = HashMap<String, AttributeValue>;

/// DynamoDB BatchWriteItem takes at most 25 requests (DynamoDB API reference, BatchWriteItem).
const BATCH_WRITE_MAX: usize = 25;

/// Keys (`key_attrs`) of every item of `table` (or of `index`) whose `pk_attr` is `value`.
async fn query_keys(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    index: Option<&str>,
    pk_attr: &str,
    value: &str,
    key_attrs: &[&str],
) -> anyhow::Result<Vec<Key>> {
    let mut keys = Vec::new();
    let mut start: Option<Key> = None;
    loop {
        let out = client
            .query()
            .table_name(table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression("#p = :v")
            .expression_attribute_names("#p", pk_attr)
            .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        for item in out.items.unwrap_or_default() {
            keys.push(
                key_attrs
                    .iter()
                    .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                    .collect(),
            );
        }
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(keys),
        }
    }
}

/// Deletes items by key, 25 per BatchWriteItem, resending unprocessed ones.
async fn delete_keys(client: &aws_sdk_dynamodb::Client, table: &str, keys: Vec<Key>) -> anyhow::Result<u64> {
    let n = keys.len() as u64;
    for chunk in keys.chunks(BATCH_WRITE_MAX) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|k| {
                DeleteRequest::builder()
                    .set_key(Some(k.clone()))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<Result<_, _>>()?;
        for _ in 0..10 {
            let out = client
                .batch_write_item()
                .request_items(table, requests.clone())
                .send()
                .await?;
            requests = out
                .unprocessed_items
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        if !requests.is_empty() {
            anyhow::bail!(
                "DynamoDB kept {} deletes of {table} unprocessed; run the purge again",
                requests.len()
            );
        }
    }
    Ok(n)
}

/// Deletes everything stored for a connection: its state items (record, scope, checkpoints,
/// drives, users without a OneDrive), its drives' inventory rows and its events. `progress` is
/// told each step's name and how many items it deleted. Idempotent: a purge cut short can run
/// again.
pub async fn purge(
    tables: &PurgeTables<'_>,
    connection: &Connection,
    mut progress: impl FnMut(&str, u64),
) -> anyhow::Result<Purged> {
    let client = tables.client;
    let id = &connection.id;
    let mut purged = Purged::default();
    let state_key = ["pk", "sk"];

    // Drives first (their ids lead to the inventory), then the rest of the state.
    for s in DriveState::ALL {
        let drives = query_keys(
            client,
            tables.state,
            Some(filetrail_aws::state::GSI1),
            filetrail_aws::state::GSI1_PK,
            &format!("CONN#{id}#DRIVE#{}", s.as_str()),
            &state_key,
        )
        .await?;
        for drive in &drives {
            let Some(AttributeValue::S(pk)) = drive.get("pk") else {
                continue;
            };
            let drive_id = pk.trim_start_matches("DRIVE#");
            let rows = query_keys(
                client,
                tables.inventory,
                None,
                "drive_id",
                drive_id,
                &["drive_id", "item_id"],
            )
            .await?;
            let n = delete_keys(client, tables.inventory, rows).await?;
            purged.inventory_rows += n;
            progress("inventory rows", n);
        }
        let n = delete_keys(client, tables.state, drives).await?;
        purged.state_items += n;
        progress("drives", n);
    }
    let nodrive = query_keys(
        client,
        tables.state,
        Some(filetrail_aws::state::GSI1),
        filetrail_aws::state::GSI1_PK,
        &format!("CONN#{id}#NODRIVE"),
        &state_key,
    )
    .await?;
    let n = delete_keys(client, tables.state, nodrive).await?;
    purged.state_items += n;
    progress("users without a OneDrive", n);

    // Events: by the days that recorded them (their markers) and shard, then the markers.
    let store = filetrail_aws::events::DynamoEventStore::new(client.clone(), tables.events);
    let inserted_days = store.days_with_events(id, true, None, None).await?;
    let observed_days = store.days_with_events(id, false, None, None).await?;
    for day in &inserted_days {
        for shard in 0..filetrail_aws::events::INSERTED_SHARDS {
            let entries = query_keys(
                client,
                tables.events,
                Some(filetrail_aws::events::BY_INSERTED),
                filetrail_aws::events::INSERTED_PK,
                &format!("{id}#{}#{shard}", day.format("%Y-%m-%d")),
                &[filetrail_aws::events::EVENT_KEY, filetrail_aws::events::DOC],
            )
            .await?;
            // With a move's destination entry, found through the event's record.
            let keys = (entries.iter())
                .flat_map(filetrail_aws::events::stored_keys)
                .map(|k| Key::from([(filetrail_aws::events::EVENT_KEY.to_owned(), AttributeValue::S(k))]))
                .collect();
            delete_keys(client, tables.events, keys).await?;
            let n = entries.len() as u64;
            purged.events += n;
            progress("events", n);
        }
    }
    let markers = (observed_days.iter().map(|d| (d, false)))
        .chain(inserted_days.iter().map(|d| (d, true)))
        .map(|(day, inserted)| {
            Key::from([(
                filetrail_aws::events::EVENT_KEY.to_owned(),
                AttributeValue::S(filetrail_aws::events::day_marker_key(id, *day, inserted)),
            )])
        })
        .collect();
    delete_keys(client, tables.events, markers).await?;

    // Objects: scope uploads and results, quarantine documents, event exports (`{id}-…` files
    // in the day/hour partitions shared by every connection).
    if let Some((s3, bucket)) = tables.bucket {
        let exports_of = format!("{id}-");
        for (prefix, only_own_files) in [
            (format!("{}{id}/", filetrail_core::apply_scope::SCOPING_PREFIX), false),
            (format!("{}{id}/", filetrail_aws::objects::QUARANTINE_PREFIX), false),
            (filetrail_core::export::EXPORT_PREFIX.to_owned(), true),
        ] {
            let keys = list_keys(s3, bucket, &prefix, |name| {
                !only_own_files || name.starts_with(&exports_of)
            })
            .await?;
            let n = delete_objects(s3, bucket, &keys).await?;
            purged.objects += n;
            progress("objects", n);
        }
    }

    // The connection's own partition last (record, scope, checkpoints), so a cut-short purge is
    // found again by id.
    let own = query_keys(client, tables.state, None, "pk", &format!("CONN#{id}"), &state_key).await?;
    let n = delete_keys(client, tables.state, own).await?;
    purged.state_items += n;
    progress("connection state", n);
    Ok(purged)
}

/// `remove` without `--purge`: the record stays, marked removed, so no work runs while the
/// history (drives, inventory, events) stays searchable by the connection's name until a purge.
/// Fails if it is unknown or already removed.
pub async fn mark_removed(state: &dyn StateStore, id: &str) -> Result<Connection, ManageError> {
    let mut c = existing(state, id).await?;
    if c.state == ConnectionState::Removed {
        return Err(ManageError::Removed(id.to_owned()));
    }
    c.state = ConnectionState::Removed;
    c.last_error = None;
    state.put_connection(&c).await?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_an_aligned_table_with_write_mode() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T09:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let rows = vec![
            ConnectionRow {
                id: "contoso-cloud".into(),
                kind: "cloud".into(),
                tenant_id: "t-1".into(),
                state: "active".into(),
                drives: 12,
                created_at: at,
                write_mode: false,
            },
            ConnectionRow {
                id: "fabrikam".into(),
                kind: "cloud".into(),
                tenant_id: "t-2".into(),
                state: "deauthorized".into(),
                drives: 0,
                created_at: at,
                write_mode: true,
            },
        ];
        let text = render_list(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID             KIND   TENANT  STATE"), "{text}");
        assert!(lines[1].contains("active") && lines[1].ends_with("off"), "{text}");
        assert!(lines[2].contains("deauthorized") && lines[2].ends_with("on"), "{text}");
        assert!(lines[1].contains("2026-11-30 09:00 UTC"));
    }

    #[test]
    fn a_tenant_id_is_a_guid_and_a_domain_is_not() {
        assert!(is_tenant_guid("7a3c9d2e-41f5-4b6a-9c8d-2e1f0a9b8c7d"));
        assert!(is_tenant_guid("7A3C9D2E-41F5-4B6A-9C8D-2E1F0A9B8C7D"));
        for not in [
            "contoso.onmicrosoft.com",
            "7a3c9d2e41f54b6a9c8d2e1f0a9b8c7d",
            "7a3c9d2e-41f5-4b6a-9c8d-2e1f0a9b8c7g",
            "",
        ] {
            assert!(!is_tenant_guid(not), "{not}");
            let e = require_tenant_guid(not)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(&format!("{not:?}")) && e.contains("GUID"), "{e}");
        }
    }

    #[test]
    fn ids_are_short_lowercase_slugs() {
        assert!(validate_id("contoso-cloud").is_ok());
        for bad in ["", "Contoso", "1abc", "a b", "a/b", &"a".repeat(49)] {
            let e = validate_id(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
