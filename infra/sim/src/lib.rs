//! # m365-sim
//!
//! A Microsoft 365 tenant simulator over real HTTP. It stands in for Entra ID (client-credentials
//! token endpoint) and Microsoft Graph (users, groups and their members, drives, driveItems, delta,
//! `$batch`) in tests, the
//! local demo and benchmarks, and behaves like the *documented* service, quirks included: 404/400
//! shapes for users without a OneDrive, shuffled `$batch` responses with inner 429s, delta items
//! without `parentReference.path` or `cTag`, repeated delta items, 410 resync with a `Location`
//! header, fractional `Retry-After`, dropped connections.
//!
//! The tenant is generated deterministically from a seed and *lazily*: nothing per user or per
//! file is stored (ids encode their index), so a million-user tenant starts instantly and costs
//! little memory. [`SimConfig::tenant`] gives the ground truth without any HTTP.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = m365_sim::spawn(m365_sim::SimConfig { users: 50, ..Default::default() }).await?;
//! let token_url = format!("{}/{}/oauth2/v2.0/token", sim.login_url(), sim.tenant_id());
//! let users_url = format!("{}/users", sim.graph_url());
//! # let _ = (token_url, users_url);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Module map: [`config`] (settings), `tenant` (generation: users, groups and their membership
//! overlay, drives), `auth` (token endpoint), `graph` (routes, `$filter`, groups, delta, batch),
//! [`content`] (item bytes, `/content` redirects, download URLs with `Range`), `faults`,
//! [`stats`], `changes` (drive change log), `inject` (activity injector: drive changes
//! plus their audit records), `sharing` (item permissions, the `shared` facet, seeded sharing).

pub mod activity;
mod auth;
mod changes;
pub mod config;
pub mod content;
mod faults;
mod graph;
mod inject;
mod prng;
mod server;
mod sharing;
pub mod stats;
mod tenant;
mod tree_cache;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use activity::{ActivityConfig, AuditControl, ContentType};
pub use auth::{DEFAULT_GRAPH_ROLES, DEFAULT_MANAGE_ROLES};
pub use changes::DriveChange;
pub use config::{FaultConfig, FilesPerDrive, SimConfig};
pub use inject::{
    AccessLevel, Activity, ActivityKind, ActivityOutcome, ActivityRequest, ActivityResponse, InjectError,
    InjectFailure, RANDOM_MAX_COUNT, RandomActivity, RecordRef, default_mix,
};
pub use sharing::{LinkScope, SEEDED_SHARE_RATE, SimGrantee, SimLink, SimPermission};
pub use stats::{FaultStats, RequestCount, Stats};
pub use tenant::{DriveItems, GroupKind, NoDriveReason, SimDrive, SimGroup, SimIdentity, SimItem, SimUser, Tenant};

use changes::Entry;
use server::{Conn, SimListener, SimState};

impl SimConfig {
    /// The tenant this configuration generates: the ground truth tests compare against,
    /// computed without HTTP (and identical to what a server spawned from it serves).
    #[must_use]
    pub fn tenant(&self) -> Tenant {
        Tenant::new(self)
    }
}

/// Errors of the mutation hooks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    /// The drive id designates no drive of this tenant.
    #[error("unknown drive id '{0}'")]
    UnknownDrive(String),
    /// The item id is not an item id of this drive.
    #[error("item id '{item}' does not belong to drive '{drive}'")]
    ForeignItem {
        /// The drive.
        drive: String,
        /// The item.
        item: String,
    },
    /// The item does not exist (or is already deleted).
    #[error("no item '{0}' to delete")]
    NoSuchItem(String),
    /// The group id designates no group of this tenant.
    #[error("unknown group id '{0}'")]
    UnknownGroup(String),
    /// The user id or user principal name designates no user of this tenant.
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    /// The user already is a direct member of the group.
    #[error("user '{user}' already is a direct member of group '{group}'")]
    AlreadyMember {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// The user is not a member of the group at all.
    #[error("user '{user}' is not a member of group '{group}'")]
    NotMember {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// The user is a member only through nested groups: remove it from those instead.
    #[error("user '{user}' is not a direct member of group '{group}', only through the nested group(s) {}", via.join(", "))]
    IndirectMember {
        /// The group.
        group: String,
        /// The user.
        user: String,
        /// Ids of the nested groups that hold the user directly.
        via: Vec<String>,
    },
}

/// A running simulator. Dropping it stops the server (like [`SimHandle::shutdown`], without
/// waiting).
#[derive(Debug)]
pub struct SimHandle {
    state: Arc<SimState>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Binds `127.0.0.1:{config.port}` (0 = any free port) and serves the tenant in the background
/// until the handle is shut down or dropped. Fails if the configuration is invalid (the message
/// names the setting) or the port cannot be bound.
pub async fn spawn(config: SimConfig) -> anyhow::Result<SimHandle> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid m365-sim configuration: {e}"))?;
    let listener = TcpListener::bind(("127.0.0.1", config.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", config.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let state = Arc::new(SimState::new(&config, format!("http://{addr}")));
    let app = server::router(Arc::clone(&state)).into_make_service_with_connect_info::<Conn>();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(SimListener::new(listener), app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "m365-sim server stopped with an error");
        }
    });
    tracing::info!(%addr, users = config.users, seed = config.seed, "m365-sim listening");
    Ok(SimHandle {
        state,
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// A cheap, cloneable remote control of a running simulator, for callbacks and other tasks that
/// cannot borrow the [`SimHandle`].
#[derive(Clone)]
pub struct SimControl {
    state: Arc<SimState>,
}

impl SimControl {
    /// See [`SimHandle::audit`].
    #[must_use]
    pub fn audit(&self) -> AuditControl {
        AuditControl {
            state: Arc::clone(&self.state),
        }
    }

    /// See [`SimHandle::expire_tokens`].
    pub fn expire_tokens(&self) {
        self.state.auth.expire_all();
    }

    /// See [`SimHandle::inject_activity`].
    pub fn inject_activity(&self, request: &ActivityRequest) -> Result<ActivityResponse, InjectFailure> {
        inject::inject(&self.state, request)
    }

    /// See [`SimHandle::stats`].
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// See [`SimHandle::item_permissions`].
    #[must_use]
    pub fn item_permissions(&self, drive_id: &str, item_id: &str) -> Vec<SimPermission> {
        item_permissions(&self.state, drive_id, item_id)
    }

    /// See [`SimHandle::expire_download_urls`].
    pub fn expire_download_urls(&self) {
        self.state.content.expire_all();
    }

    /// The served tenant (ground truth, membership changes included).
    #[must_use]
    pub fn tenant(&self) -> Tenant {
        self.state.tenant.clone()
    }

    /// Makes a user (object id or user principal name) a direct member of a group. Listings,
    /// `$batch` and the ground truth ([`Tenant::transitive_user_ids`], …) reflect it at once.
    /// Fails if the group or user is unknown, or the user already is a direct member.
    pub fn add_group_member(&self, group_id: &str, user: &str) -> Result<(), SimError> {
        self.state.tenant.add_group_member(group_id, user)
    }

    /// Removes a user (object id or user principal name) from a group's *direct* members. Fails
    /// if the group or user is unknown, or the user is no direct member: a user who belongs only
    /// through nested groups gets [`SimError::IndirectMember`] naming them.
    pub fn remove_group_member(&self, group_id: &str, user: &str) -> Result<(), SimError> {
        self.state.tenant.remove_group_member(group_id, user)
    }
}

impl SimHandle {
    /// Controls and ground truth of the simulated audit log (Management Activity API): publish
    /// records, advance the audit clock, disable subscriptions or the audit log, list blobs.
    #[must_use]
    pub fn audit(&self) -> AuditControl {
        AuditControl {
            state: Arc::clone(&self.state),
        }
    }

    /// A cloneable remote control of this simulator.
    #[must_use]
    pub fn control(&self) -> SimControl {
        SimControl {
            state: Arc::clone(&self.state),
        }
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The login (Entra) base URL: the same as [`Self::base_url`]; tokens are at
    /// `{login_url}/{tenant}/oauth2/v2.0/token`.
    #[must_use]
    pub fn login_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The Graph base URL, `{base_url}/v1.0`.
    #[must_use]
    pub fn graph_url(&self) -> String {
        self.state.graph_url.clone()
    }

    /// The URL of the `GET /users` page that starts at user `start` with page size `top` —
    /// what an `@odata.nextLink` would hold. For tests and benchmarks that must jump into the
    /// middle of a listing (e.g. the last page of a million users); clients follow the links.
    #[must_use]
    pub fn users_page_url(&self, start: u64, top: u64) -> String {
        graph::users::page_link(&self.state, start, top, None)
    }

    /// The bound socket address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory (tenant) id.
    #[must_use]
    pub fn tenant_id(&self) -> &str {
        self.state.tenant.tenant_id()
    }

    /// The tenant's initial domain (`contoso.onmicrosoft.com`): Entra accepts it in place of the
    /// tenant id in token URLs.
    #[must_use]
    pub fn tenant_domain(&self) -> &str {
        &self.state.auth.domain
    }

    /// The registered application's client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.state.auth.client_id
    }

    /// The registered application's client secret.
    #[must_use]
    pub fn client_secret(&self) -> &str {
        &self.state.auth.client_secret
    }

    /// The served tenant (ground truth).
    #[must_use]
    pub fn tenant(&self) -> &Tenant {
        &self.state.tenant
    }

    /// A snapshot of the request and fault counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        self.state.counters.reset();
    }

    /// The fault configuration in force.
    #[must_use]
    pub fn faults(&self) -> FaultConfig {
        self.state.fault_config()
    }

    /// Replaces the fault configuration; an invalid one is refused with the reason.
    pub fn try_set_faults(&self, faults: FaultConfig) -> Result<(), String> {
        self.state.set_fault_config(faults)
    }

    /// Replaces the fault configuration. An invalid one (a rate outside 0..=1, rates summing
    /// over 1, a reversed `Retry-After` range) is logged and ignored; use
    /// [`Self::try_set_faults`] to get the reason.
    pub fn set_faults(&self, faults: FaultConfig) {
        if let Err(e) = self.try_set_faults(faults) {
            tracing::error!(error = %e, "m365-sim: invalid fault configuration ignored");
        }
    }

    /// Invalidates every access token issued so far (they then get 401
    /// `InvalidAuthenticationToken`); new tokens work.
    pub fn expire_tokens(&self) {
        self.state.auth.expire_all();
    }

    /// Makes every download URL issued so far (`@microsoft.graph.downloadUrl`, `Location` of
    /// `…/content`) answer 401 `unauthenticated`/`expiredToken`; URLs issued later work.
    pub fn expire_download_urls(&self) {
        self.state.content.expire_all();
    }

    /// Sets the lifetime of download URLs issued from now on (zero: expired at once).
    pub fn set_download_url_lifetime(&self, lifetime: Duration) {
        self.state.content.set_lifetime(lifetime);
    }

    /// The bytes a download of the item serves now: its current version (generated base with
    /// applied changes). `None` for folders and for items that do not exist or were deleted.
    #[must_use]
    pub fn content(&self, drive_id: &str, item_id: &str) -> Option<content::Content> {
        let item = self.current_item(drive_id, item_id)?;
        content::Content::of(drive_id, &item)
    }

    /// A fresh download URL for a file, as `@microsoft.graph.downloadUrl` would give it; `None`
    /// for folders and missing items.
    #[must_use]
    pub fn download_url(&self, drive_id: &str, item_id: &str) -> Option<String> {
        let item = self.current_item(drive_id, item_id)?;
        let drive = self.state.tenant.drive_by_id(drive_id)?;
        (!item.is_folder).then(|| content::download_url(&self.state, &drive, &item))
    }

    /// See [`SimControl::add_group_member`].
    pub fn add_group_member(&self, group_id: &str, user: &str) -> Result<(), SimError> {
        self.control().add_group_member(group_id, user)
    }

    /// See [`SimControl::remove_group_member`].
    pub fn remove_group_member(&self, group_id: &str, user: &str) -> Result<(), SimError> {
        self.control().remove_group_member(group_id, user)
    }

    /// Every permission an item has now, the owner's first, as `GET …/items/{id}/permissions`
    /// lists them (ground truth, no HTTP): seeded sharing of generated files included, run-time
    /// changes (injected links, shares, revocations, deletions over Graph) applied. Empty for an
    /// unknown drive or an item that does not exist (or was deleted).
    #[must_use]
    pub fn item_permissions(&self, drive_id: &str, item_id: &str) -> Vec<SimPermission> {
        item_permissions(&self.state, drive_id, item_id)
    }

    /// The drive's items that are shared now (any permission besides the owner's), each with
    /// those permissions: the ground truth of an exposure report. Empty for an unknown drive.
    #[must_use]
    pub fn shared_items(&self, drive_id: &str) -> Vec<(SimItem, Vec<SimPermission>)> {
        let tenant = &self.state.tenant;
        let Some(d) = tenant.decode_drive_id(drive_id) else {
            return Vec::new();
        };
        let Some(drive) = tenant.drive(d) else {
            return Vec::new();
        };
        let tree = self.state.trees.get(tenant, d);
        self.current_items(drive_id)
            .into_iter()
            .filter_map(|item| {
                let shared = sharing::shared_with(&self.state, d, &drive, &item, Some(&tree));
                (!shared.is_empty()).then_some((item, shared))
            })
            .collect()
    }

    /// Makes every delta token (nextLink or deltaLink) issued so far for this drive answer
    /// 410 Gone. Returns `false` for an unknown drive id.
    pub fn invalidate_delta_tokens(&self, drive_id: &str) -> bool {
        match self.state.tenant.decode_drive_id(drive_id) {
            Some(d) => {
                self.state.drives.invalidate(d.key());
                true
            }
            None => false,
        }
    }

    /// The drive's state version: how many changes were applied through
    /// [`Self::apply_drive_change`]. A deltaLink issued at version `v` reports the changes
    /// after `v`.
    #[must_use]
    pub fn drive_version(&self, drive_id: &str) -> Option<u64> {
        let d = self.state.tenant.decode_drive_id(drive_id)?;
        Some(self.state.drives.version(d.key()))
    }

    /// A fresh item id for a new item in this drive (never used by a generated item).
    pub fn allocate_item_id(&self, drive_id: &str) -> Result<String, SimError> {
        let tenant = &self.state.tenant;
        let d = tenant
            .decode_drive_id(drive_id)
            .ok_or_else(|| SimError::UnknownDrive(drive_id.to_owned()))?;
        let generated = tenant.drive_item_count(drive_id);
        let ordinal = self.state.drives.allocate(d.key(), generated);
        Ok(tenant.item_id(d, ordinal))
    }

    /// The current state of an item (generated base with applied changes); `None` if it does
    /// not exist or was deleted.
    #[must_use]
    pub fn current_item(&self, drive_id: &str, item_id: &str) -> Option<SimItem> {
        let tenant = &self.state.tenant;
        let d = tenant.decode_drive_id(drive_id)?;
        let ordinal = tenant.decode_item_id(d, item_id)?;
        match self.state.drives.latest(d.key(), item_id) {
            Some(Entry::Present(item)) => Some(*item),
            Some(Entry::Deleted { .. }) => None,
            Some(Entry::Shared { .. }) | None => (ordinal < tenant.drive_item_count(drive_id))
                .then(|| tenant.drive_item(drive_id, item_id))
                .flatten(),
        }
    }

    /// Every item the drive holds now (its generated items with the change log applied, roots
    /// included): the ground truth an inventory is compared with after activity. Empty for an
    /// unknown drive.
    #[must_use]
    pub fn current_items(&self, drive_id: &str) -> Vec<SimItem> {
        let tenant = &self.state.tenant;
        let Some(d) = tenant.decode_drive_id(drive_id) else {
            return Vec::new();
        };
        let latest = changes::latest_per_item(&self.state.drives.entries(d.key(), 0, u64::MAX));
        let logged: std::collections::HashSet<&str> = latest.iter().map(Entry::id).collect();
        let mut items: Vec<SimItem> = tenant
            .drive_items(drive_id)
            .filter(|item| !logged.contains(item.id.as_str()))
            .collect();
        items.extend(latest.iter().filter_map(|e| match e {
            Entry::Present(item) => Some((**item).clone()),
            Entry::Deleted { .. } | Entry::Shared { .. } => None,
        }));
        items
    }

    /// Appends a change to the drive's change log: it shows up in item reads and in delta
    /// rounds from tokens issued before it. Returns the new drive version. The hook for
    /// activity injection; it checks ids, not tree consistency.
    pub fn apply_drive_change(&self, drive_id: &str, change: DriveChange) -> Result<u64, SimError> {
        let tenant = &self.state.tenant;
        let d = tenant
            .decode_drive_id(drive_id)
            .ok_or_else(|| SimError::UnknownDrive(drive_id.to_owned()))?;
        let entry = match change {
            DriveChange::Upsert(item) => {
                if tenant.decode_item_id(d, &item.id).is_none() {
                    return Err(SimError::ForeignItem {
                        drive: drive_id.to_owned(),
                        item: item.id,
                    });
                }
                Entry::Present(item)
            }
            DriveChange::Delete { item_id } => {
                let current = self
                    .current_item(drive_id, &item_id)
                    .ok_or_else(|| SimError::NoSuchItem(item_id.clone()))?;
                Entry::Deleted {
                    id: current.id,
                    parent_id: current.parent_id,
                    is_folder: current.is_folder,
                    at: chrono::Utc::now(),
                }
            }
        };
        Ok(self.state.drives.append(d.key(), entry))
    }

    /// Injects user activity on OneDrive files (the Rust form of `POST /_sim/activity`): each
    /// activity is applied to its drive through the change log (item reads and delta show it)
    /// and its audit records are published to the audit log (`Audit.SharePoint`). Activities
    /// apply in order, explicit ones before the random mix; the first that cannot be applied
    /// stops the injection, and [`InjectFailure::applied`] lists those applied before it.
    pub fn inject_activity(&self, request: &ActivityRequest) -> Result<ActivityResponse, InjectFailure> {
        inject::inject(&self.state, request)
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 5 s) and returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                tracing::warn!("m365-sim: connections still open after 5 s; abandoning them");
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn item_permissions(state: &SimState, drive_id: &str, item_id: &str) -> Vec<SimPermission> {
    let tenant = &state.tenant;
    let Some(d) = tenant.decode_drive_id(drive_id) else {
        return Vec::new();
    };
    let Some(drive) = tenant.drive(d) else {
        return Vec::new();
    };
    match graph::drives::current_item_in(state, d, &drive, item_id) {
        Some(item) => sharing::permissions(state, d, &drive, &item),
        None => Vec::new(),
    }
}
