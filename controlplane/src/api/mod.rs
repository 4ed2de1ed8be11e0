//! The HTTP API: shared state, errors, authentication and the router.
//!
//! Two audiences: people and scripts authenticate with an API key (`Authorization: Bearer
//! kiln_...`) and see only their account's resources; agents authenticate with their machine
//! credential (`Bearer kmc_...`) on `/api/agent/v1/*`.

pub mod accounts;
pub mod agent;
pub mod artifacts;
pub mod catalog;
pub mod machines;
pub mod metrics;
pub mod names;
pub mod openapi;
pub mod session;

use crate::db::Db;
use crate::metrics::Metrics;
use crate::ratelimit::{Limiter, Limiters, RateLimits};
use crate::secrets::{MasterKey, hash_credential};
use crate::tokens::TokenKeys;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use kiln_protocol::ErrorBody;
use sqlx::Row;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// Server settings the API needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URL agents and install.sh use to reach this server.
    pub public_url: String,
    /// Hex SHA-256 of the CA certificate.
    pub ca_sha256: String,
    /// The CA certificate PEM, served at `/ca.pem`.
    pub ca_pem: String,
    /// Directory with the installer artifacts (vmlinuz, kiln-agent, kiln.iso).
    pub artifacts_dir: PathBuf,
    /// Seconds between agent heartbeats; a machine is offline after three missed.
    pub heartbeat_secs: u64,
    /// Approval codes expire after this many seconds.
    pub approval_code_secs: i64,
    /// Per-client-IP limits of the endpoints strangers can call.
    pub rate_limits: RateLimits,
}

/// State shared by all requests.
pub struct AppState {
    pub db: Db,
    pub master: MasterKey,
    pub tokens: TokenKeys,
    pub settings: Settings,
    pub metrics: Metrics,
    notifiers: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Turns true when the server shuts down: long-polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    /// Where the placeholder of the ISO template is, keyed by its length and mtime.
    pub iso_cache: Mutex<Option<IsoCacheEntry>>,
    pub limiters: Limiters,
}

/// Length, modification time and placeholder of the ISO template last scanned.
pub type IsoCacheEntry = (u64, Option<std::time::SystemTime>, crate::iso::Placeholder);

impl AppState {
    pub fn new(
        db: Db,
        master: MasterKey,
        settings: Settings,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let limiters = Limiters::new(settings.rate_limits);
        AppState {
            db,
            tokens: TokenKeys::new(master.clone()),
            master,
            settings,
            metrics: Metrics::default(),
            notifiers: Mutex::new(HashMap::new()),
            shutdown,
            iso_cache: Mutex::new(None),
            limiters,
        }
    }

    /// The wake-up handle of a machine's long-polls.
    pub fn notifier(&self, machine: Uuid) -> Arc<Notify> {
        let mut map = self.notifiers.lock().expect("notifier map poisoned");
        map.entry(machine)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Bumps a machine's order version and wakes its long-polls.
    pub async fn orders_changed(&self, machine: Uuid) -> Result<(), ApiError> {
        sqlx::query("UPDATE machines SET orders_version = orders_version + 1 WHERE id = $1")
            .bind(machine.to_string())
            .execute(&self.db.pool)
            .await?;
        self.notifier(machine).notify_waiters();
        Ok(())
    }
}

pub type AppStateRef = Arc<AppState>;

/// An error answer: status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(anyhow::Error::new(e).context("database"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// A caller authenticated by API key.
#[derive(Debug, Clone)]
pub struct User {
    pub account: Uuid,
    pub key_id: Uuid,
    pub is_admin: bool,
}

impl User {
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this operation needs an admin API key"))
        }
    }
}

impl FromRequestParts<AppStateRef> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppStateRef) -> ApiResult<User> {
        if bearer(parts).is_none()
            && let Some(user) = session::user_from_cookie(parts, state).await?
        {
            return Ok(user);
        }
        let key = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("missing API key: send `Authorization: Bearer kiln_...`")
        })?;
        User::of_api_key(&state.db, key)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))
    }
}

impl User {
    /// The caller an API key stands for; `None` when no unrevoked key has that value (the
    /// bearer check above and the dashboard's sign-in share it).
    pub async fn of_api_key(db: &Db, key: &str) -> ApiResult<Option<User>> {
        let Some(row) = sqlx::query(
            "SELECT id, account_id, is_admin FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_credential(key))
        .fetch_optional(&db.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(User {
            key_id: parse_uuid(&row.try_get::<String, _>("id")?)?,
            account: parse_uuid(&row.try_get::<String, _>("account_id")?)?,
            is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        }))
    }
}

/// An agent authenticated by its machine credential.
#[derive(Debug, Clone)]
pub struct Agent {
    pub machine: Uuid,
    pub account: Uuid,
}

impl FromRequestParts<AppStateRef> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppStateRef) -> ApiResult<Agent> {
        check_protocol_version(parts)?;
        let cred = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "missing machine credential: send `Authorization: Bearer kmc_...`",
            )
        })?;
        let row = sqlx::query(
            "SELECT id, account_id, last_seen_at FROM machines WHERE credential_hash = $1",
        )
        .bind(hash_credential(cred))
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                "unknown or revoked machine credential; register the machine again",
            )
        })?;
        let machine = parse_uuid(&row.try_get::<String, _>("id")?)?;
        let account: Option<String> = row.try_get("account_id")?;
        let account =
            parse_uuid(&account.ok_or_else(|| ApiError::unauthorized("machine is not approved"))?)?;
        // Any authenticated agent request proves the machine is alive; write at most every 10 s.
        let last: Option<i64> = row.try_get("last_seen_at")?;
        let now = crate::db::now_ms();
        if last.is_none_or(|l| now - l > 10_000) {
            sqlx::query("UPDATE machines SET last_seen_at = $1 WHERE id = $2")
                .bind(now)
                .bind(machine.to_string())
                .execute(&state.db.pool)
                .await?;
        }
        Ok(Agent { machine, account })
    }
}

/// Refuses agents that speak another protocol version.
pub fn check_protocol_version(parts: &Parts) -> ApiResult<()> {
    if let Some(v) = parts.headers.get(kiln_protocol::VERSION_HEADER) {
        let v = v.to_str().unwrap_or("");
        if v != kiln_protocol::PROTOCOL_VERSION.to_string() {
            return Err(ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                format!(
                    "agent protocol version {v:?} is not supported; this server speaks {}",
                    kiln_protocol::PROTOCOL_VERSION
                ),
            ));
        }
    }
    Ok(())
}

/// The client's IP address: the TCP peer, put in the request by [`crate::server::serve`] as
/// `ConnectInfo` (unspecified when absent, e.g. in-process calls).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
        ))
    }
}

/// Takes one request of `ip` from `limiter`, or answers 429 with Retry-After.
pub fn rate_limit(limiter: &Limiter, ip: ClientIp, what: &str) -> ApiResult<()> {
    limiter
        .check(ip.0, std::time::Instant::now())
        .map_err(|secs| too_many(&format!("{what} from {}", ip.0), secs))
}

/// The 429 answer for too many `what` (e.g. "claims from 10.0.0.1"), retry in `secs`.
pub fn too_many(what: &str, secs: u64) -> ApiError {
    tracing::warn!(what, "rate limited");
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many {what}; try again in {secs} s"),
    );
    e.retry_after = Some(secs);
    e
}

pub fn parse_uuid(s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::bad_request(format!("{s:?} is not a UUID")))
}

async fn healthz(State(state): State<AppStateRef>) -> ApiResult<&'static str> {
    sqlx::query("SELECT 1").execute(&state.db.pool).await?;
    Ok("ok\n")
}

async fn ca_pem(State(state): State<AppStateRef>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.settings.ca_pem.clone(),
    )
}

/// Server information (unauthenticated): version, URL and CA pin.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema, Debug)]
pub struct Info {
    pub version: String,
    pub protocol_version: u32,
    pub public_url: String,
    pub ca_sha256: String,
}

#[utoipa::path(get, path = "/api/info", tag = "server", responses((status = 200, body = Info)))]
pub async fn info(State(state): State<AppStateRef>) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: kiln_protocol::PROTOCOL_VERSION,
        public_url: state.settings.public_url.clone(),
        ca_sha256: state.settings.ca_sha256.clone(),
    })
}

/// The whole router.
pub fn router(state: AppStateRef) -> Router {
    use accounts as a;
    use agent as ag;
    use catalog as c;
    use machines as m;
    let api = Router::new()
        .route("/api/info", get(info))
        .route(
            "/api/session",
            get(session::current)
                .post(session::sign_in)
                .delete(session::sign_out),
        )
        .route(
            "/api/accounts",
            get(a::list_accounts).post(a::create_account),
        )
        .route("/api/api-keys", get(a::list_keys).post(a::create_key))
        .route("/api/api-keys/{id}", delete(a::revoke_key))
        .route("/api/bootstrap-tokens", post(a::create_token))
        .route("/api/admin/token-keys", get(a::list_token_keys))
        .route("/api/admin/token-keys/rotate", post(a::rotate_token_key))
        .route("/api/admin/token-keys/{kid}", delete(a::retire_token_key))
        .route(
            "/api/account/settings",
            get(c::get_settings).put(c::put_settings),
        )
        .route("/api/images", get(c::list_images).post(c::create_image))
        .route(
            "/api/images/{id}",
            get(c::get_image)
                .put(c::update_image)
                .delete(c::delete_image),
        )
        .route(
            "/api/registry-credentials",
            get(c::list_creds).post(c::create_cred),
        )
        .route("/api/registry-credentials/{id}", delete(c::delete_cred))
        .route("/api/roles", get(c::list_roles).post(c::create_role))
        .route(
            "/api/roles/{id}",
            get(c::get_role).put(c::update_role).delete(c::delete_role),
        )
        .route("/api/machines", get(m::list_machines))
        .route("/api/machines/approve", post(m::approve))
        .route(
            "/api/machines/{id}",
            get(m::get_machine).delete(m::delete_machine),
        )
        .route("/api/provisioning/machines/{id}", patch(m::patch_machine))
        .route("/api/machines/{id}/roles", put(m::set_roles))
        .route(
            "/api/machines/{id}/credential",
            delete(m::revoke_credential),
        )
        .route("/api/machines/{id}/actions", post(m::create_action))
        .route("/api/machines/{id}/provision", post(m::provision))
        .route("/api/machines/{id}/runs", get(m::list_runs))
        .route("/api/runs/{id}", get(m::get_run))
        .route(
            "/api/agent/v1/register",
            post(ag::register).layer(DefaultBodyLimit::max(ag::REGISTER_BODY_LIMIT)),
        )
        .route(
            "/api/agent/v1/claim",
            post(ag::claim).layer(DefaultBodyLimit::max(ag::REGISTER_BODY_LIMIT)),
        )
        .route("/api/agent/v1/heartbeat", post(ag::heartbeat))
        .route("/api/agent/v1/orders", get(ag::orders))
        .route("/api/agent/v1/runs/{id}/events", post(ag::events))
        .route("/api/agent/v1/actions/{id}/ack", post(ag::ack_action))
        .route(
            "/api/agent/v1/credential/rotate",
            post(ag::rotate_credential),
        )
        .route("/api/openapi.json", get(openapi::serve))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::serve))
        .route("/ca.pem", get(ca_pem))
        .route("/install.sh", get(artifacts::install_sh))
        .route("/boot.ipxe", get(artifacts::boot_ipxe))
        .route("/api/installer/iso", get(artifacts::installer_iso))
        .route("/artifacts", get(artifacts::index))
        .route("/artifacts/{name}", get(artifacts::file))
        .merge(crate::web::router());
    api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        metrics::track,
    ))
    .with_state(state)
}
