//! The HTTP server: shared state, routes, fault injection and the listener that can drop a
//! connection without answering.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::serve::{IncomingStream, Listener};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::SimError;
use crate::auth::{self, Resource, TokenAuthority};
use crate::changes::DriveStates;
use crate::config::{FaultConfig, SimConfig};
use crate::content::{self, ContentState};
use crate::faults::{self, Fault};
use crate::graph::{self, Ctx, Route, batch, request_kind};
use crate::prng::{hash3, siphash24, tag};
use crate::stats::{Counters, Kind, bump};
use crate::tenant::Tenant;
use crate::tree_cache::TreeCache;

const K_LINK_KEY: u64 = tag(b"link-key");

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) tenant: Tenant,
    pub(crate) auth: TokenAuthority,
    pub(crate) counters: Counters,
    pub(crate) drives: DriveStates,
    pub(crate) trees: TreeCache,
    pub(crate) base_url: String,
    pub(crate) graph_url: String,
    /// The audit log and Management Activity API state (`crate::activity`).
    pub(crate) activity: crate::activity::AuditLog,
    pub(crate) page_size_default: u64,
    /// Versions kept per file (`crate::graph::versions`).
    pub(crate) versions_kept: usize,
    pub(crate) delta_repeat_rate: f64,
    /// Key sealing skiptokens and delta tokens.
    pub(crate) link_key: (u64, u64),
    /// Download URLs: lifetime, expiry epoch, content fault draws.
    pub(crate) content: ContentState,
    /// The activity injector's state (`crate::inject`).
    pub(crate) injector: crate::inject::Injector,
    /// Permissions of items whose sharing changed at run time (`crate::sharing`).
    pub(crate) sharing: crate::sharing::SharingStore,
    faults: RwLock<FaultConfig>,
    request_seq: AtomicU64,
    fault_seq: AtomicU64,
    inner_fault_seq: AtomicU64,
    batch_seq: AtomicU64,
}

impl SimState {
    pub(crate) fn new(config: &SimConfig, base_url: String) -> Self {
        let tenant = Tenant::new(config);
        let auth = TokenAuthority::new(
            config.seed,
            config.token_lifetime,
            config.effective_client_id(),
            config.effective_client_secret(),
            tenant.tenant_id().to_owned(),
            tenant.domain().to_owned(),
        );
        auth.set_activity_feed_read(config.activity.activity_feed_read_granted);
        Self {
            activity: crate::activity::AuditLog::new(&config.activity, config.seed, tenant.tenant_id()),
            graph_url: format!("{base_url}/v1.0"),
            base_url,
            auth,
            counters: Counters::default(),
            drives: DriveStates::default(),
            trees: TreeCache::default(),
            page_size_default: config.page_size_default,
            versions_kept: config.versions_kept,
            delta_repeat_rate: config.delta_repeat_rate,
            link_key: (hash3(config.seed, K_LINK_KEY, 0), hash3(config.seed, K_LINK_KEY, 1)),
            content: ContentState::new(config.download_url_lifetime),
            injector: crate::inject::Injector::default(),
            sharing: crate::sharing::SharingStore::default(),
            faults: RwLock::new(config.faults.clone()),
            request_seq: AtomicU64::new(0),
            fault_seq: AtomicU64::new(0),
            inner_fault_seq: AtomicU64::new(0),
            batch_seq: AtomicU64::new(0),
            tenant,
        }
    }

    pub(crate) fn next_request_number(&self) -> u64 {
        self.request_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_inner_fault_number(&self) -> u64 {
        self.inner_fault_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_batch_number(&self) -> u64 {
        self.batch_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one HTTP request of this kind.
    pub(crate) fn count_http(&self, kind: Kind) {
        bump(&self.counters.http_requests);
        self.counters.count_kind(kind);
    }

    pub(crate) fn fault_config(&self) -> FaultConfig {
        self.faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Seals an opaque link token (skiptoken, delta token): payload plus a 64-bit SipHash MAC,
    /// base64url. Clients cannot forge or alter one.
    pub(crate) fn seal(&self, payload: &[u8]) -> String {
        let (k0, k1) = self.link_key;
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&siphash24(k0, k1, payload).to_le_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Opens a token sealed by [`Self::seal`]; `None` if this server did not issue it.
    pub(crate) fn unseal(&self, token: &str) -> Option<Vec<u8>> {
        let (k0, k1) = self.link_key;
        let mut bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if bytes.len() < 8 {
            return None;
        }
        let mac = bytes.split_off(bytes.len() - 8);
        (siphash24(k0, k1, &bytes).to_le_bytes()[..] == mac[..]).then_some(bytes)
    }

    pub(crate) fn set_fault_config(&self, cfg: FaultConfig) -> Result<(), String> {
        cfg.validate()?;
        *self.faults.write().unwrap_or_else(std::sync::PoisonError::into_inner) = cfg;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Listener whose connections can be killed from a handler.

/// A TCP stream that fails all I/O once killed, so hyper abandons the connection without writing
/// the pending response and closes the socket.
#[derive(Debug)]
pub(crate) struct KillableStream {
    stream: TcpStream,
    killed: Arc<AtomicBool>,
}

fn killed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "m365-sim: injected connection drop")
}

impl AsyncRead for KillableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections as [`KillableStream`]s.
#[derive(Debug)]
pub(crate) struct SimListener {
    inner: TcpListener,
}

impl SimListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for SimListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = KillableStream {
                        stream,
                        killed: Arc::new(AtomicBool::new(false)),
                    };
                    return (io, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Per-connection handle given to handlers: lets one drop its own connection.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    killed: Arc<AtomicBool>,
}

impl Conn {
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        Self {
            killed: Arc::clone(&stream.io().killed),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routes.

pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token_v2))
        .route("/{tenant}/oauth2/token", post(auth::token_v1))
        .route("/healthz", get(|| async { "ok" }))
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/stats/reset", post(sim_stats_reset))
        .route("/_sim/tenant", get(sim_tenant))
        .route("/_sim/faults", get(sim_faults_get).post(sim_faults_set))
        .route("/_sim/tokens/expire", post(sim_expire_tokens))
        .route("/_sim/auth/roles", get(auth::sim_roles_get).post(auth::sim_roles_set))
        .route(
            "/_sim/drives/{drive_id}/invalidate-delta-tokens",
            post(sim_invalidate_delta),
        )
        .route("/_sim/groups/{group_id}", get(sim_group))
        .route("/_sim/groups/{group_id}/members", post(sim_group_member_add))
        .route(
            "/_sim/groups/{group_id}/members/{user}",
            delete(sim_group_member_remove),
        )
        .route("/_sim/content/expire-download-urls", post(sim_expire_download_urls))
        .route("/personal/{site}/_layouts/15/download.aspx", get(content::download))
        .route("/sites/{site}/_layouts/15/download.aspx", get(content::download))
        .route("/v1.0/{*rest}", any(graph_entry))
        .route("/_sim/activity", post(crate::inject::handle))
        .merge(crate::activity::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": "NotFound", "message": format!("m365-sim serves no '{}'", uri.path())}}).to_string(),
    )
        .into_response()
}

/// Every Graph request: count, authenticate, inject faults, dispatch.
async fn graph_entry(
    State(state): State<Arc<SimState>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().strip_prefix("/v1.0").unwrap_or_default();
    let query = uri.query().unwrap_or_default();
    let route = Route::parse(path);
    let kind = request_kind(&route, query);
    state.count_http(kind);
    state.counters.record_request(&method, kind, false);
    let mut ctx = Ctx::new(&state, &headers);

    match state.auth.claims(&headers, Resource::Graph) {
        Ok(claims) => ctx.roles = auth::token_roles(&claims),
        Err(failure) => {
            bump(&state.counters.unauthorized);
            return ctx.unauthorized(failure).into_http(&ctx);
        }
    }

    let cfg = state.fault_config();
    let n = state.fault_seq.fetch_add(1, Ordering::Relaxed);
    let decision = faults::decide(&cfg, state.tenant.seed(), n);
    if let Some(delay) = decision.delay {
        bump(&state.counters.slowed);
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = decision.fault {
        match &fault {
            Fault::Drop => {
                bump(&state.counters.dropped);
                tracing::debug!(%uri, "fault: dropping connection");
                conn.kill();
            }
            Fault::TooManyRequests { .. } => bump(&state.counters.throttled_429),
            Fault::Unavailable { .. } => bump(&state.counters.unavailable_503),
            Fault::ServerError(_) => bump(&state.counters.server_error),
        }
        return ctx.fault(&fault).into_http(&ctx);
    }

    let resp = if route == Route::Batch {
        if method == Method::POST {
            batch::handle(&ctx, &body)
        } else {
            ctx.error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            )
        }
    } else {
        graph::dispatch(&ctx, &method, &route, query)
    };
    resp.into_http(&ctx)
}

async fn sim_stats(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.counters.snapshot()).into_response()
}

async fn sim_stats_reset(State(state): State<Arc<SimState>>) -> StatusCode {
    state.counters.reset();
    StatusCode::NO_CONTENT
}

async fn sim_tenant(State(state): State<Arc<SimState>>) -> Response {
    let t = &state.tenant;
    axum::Json(json!({
        "tenant_id": t.tenant_id(),
        "domain": t.domain(),
        "client_id": state.auth.client_id,
        "users": t.user_count(),
        "groups": t.group_count(),
        "team_sites": t.team_site_count(),
        "files_per_drive": t.files_per_drive().to_string(),
        "seed": t.seed(),
        "base_url": state.base_url,
        "login_url": state.base_url,
        "graph_url": state.graph_url,
        "sharepoint_url": t.sharepoint_url(),
        "my_sharepoint_url": t.my_sharepoint_url(),
    }))
    .into_response()
}

async fn sim_faults_get(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.fault_config()).into_response()
}

/// `POST /_sim/faults` with a (possibly partial) `FaultConfig`; unspecified fields take their
/// defaults. 400 with the reason if the body is not a valid configuration.
async fn sim_faults_set(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let parsed: Result<FaultConfig, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
    match parsed.and_then(|cfg| state.set_fault_config(cfg.clone()).map(|()| cfg)) {
        Ok(cfg) => axum::Json(cfg).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {"code": "BadRequest", "message": e}}).to_string(),
        )
            .into_response(),
    }
}

async fn sim_expire_tokens(State(state): State<Arc<SimState>>) -> StatusCode {
    state.auth.expire_all();
    StatusCode::NO_CONTENT
}

async fn sim_expire_download_urls(State(state): State<Arc<SimState>>) -> StatusCode {
    state.content.expire_all();
    StatusCode::NO_CONTENT
}

async fn sim_invalidate_delta(State(state): State<Arc<SimState>>, Path(drive_id): Path<String>) -> StatusCode {
    match state.tenant.decode_drive_id(&drive_id) {
        Some(d) => {
            state.drives.invalidate(d.key());
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

fn sim_error(e: &SimError) -> Response {
    let status = match e {
        SimError::UnknownDrive(_)
        | SimError::UnknownGroup(_)
        | SimError::UnknownUser(_)
        | SimError::NoSuchItem(_)
        | SimError::NotMember { .. } => StatusCode::NOT_FOUND,
        SimError::AlreadyMember { .. } | SimError::IndirectMember { .. } => StatusCode::CONFLICT,
        SimError::ForeignItem { .. } => StatusCode::BAD_REQUEST,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": "SimError", "message": e.to_string()}}).to_string(),
    )
        .into_response()
}

/// `GET /_sim/groups/{id}`: the group's ground truth (kind, nesting, member counts, overlay
/// included), for demos and scripts.
async fn sim_group(State(state): State<Arc<SimState>>, Path(group_id): Path<String>) -> Response {
    let t = &state.tenant;
    let Some(group) = t.find_group(&group_id) else {
        return sim_error(&SimError::UnknownGroup(group_id));
    };
    axum::Json(json!({
        "id": group.id,
        "displayName": group.display_name,
        "mail": group.mail,
        "groupTypes": group.group_types(),
        "memberGroups": t.member_group_ids(&group.id),
        "transitiveGroups": t.transitive_group_ids(&group.id),
        "transitiveUserCount": t.transitive_user_count(&group.id),
    }))
    .into_response()
}

/// `POST /_sim/groups/{id}/members` with `{"user": "<id or UPN>"}`: adds a direct member. 204;
/// 404 for an unknown group or user; 409 if already a direct member.
async fn sim_group_member_add(
    State(state): State<Arc<SimState>>,
    Path(group_id): Path<String>,
    body: Bytes,
) -> Response {
    let user = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("user").and_then(serde_json::Value::as_str).map(str::to_owned));
    let Some(user) = user else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {"code": "BadRequest", "message": "expected a JSON body {\"user\": \"<id or UPN>\"}"}})
                .to_string(),
        )
            .into_response();
    };
    match state.tenant.add_group_member(&group_id, &user) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(&e),
    }
}

/// `DELETE /_sim/groups/{id}/members/{user}`: removes a direct member. 204; 404 for an unknown
/// group or user or a non-member; 409 (naming the nested groups) for a member only through
/// nested groups.
async fn sim_group_member_remove(
    State(state): State<Arc<SimState>>,
    Path((group_id, user)): Path<(String, String)>,
) -> Response {
    match state.tenant.remove_group_member(&group_id, &user) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(&e),
    }
}
