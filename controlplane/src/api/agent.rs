//! The agent protocol, version 1 (`/api/agent/v1`, types in kiln-protocol, described in
//! docs/protocol.md): register, claim, heartbeat, long-poll for orders, report run events,
//! acknowledge actions, rotate the machine credential.

use super::catalog::{registry_auth, roles_by_name};
use super::machines::{RunStatus, active_run};
use super::{
    Agent, ApiError, ApiResult, AppState, AppStateRef, ClientIp, check_protocol_version,
    parse_uuid, rate_limit, too_many,
};
use crate::approval;
use crate::db::{Backend, now_ms};
use crate::secrets::{hash_credential, new_credential};
use crate::tokens::TokenError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use kiln_protocol::{
    ClaimRequest, ClaimResponse, CredentialResponse, EventAck, EventBatch, Heartbeat,
    HeartbeatResponse, ImageSource, Order, OrdersResponse, ProvisionOrder, RegisterRequest,
    RegisterResponse, RunEvent, Step,
};
use serde::Deserialize;
use sqlx::Row;
use std::time::Duration;
use time::OffsetDateTime;
use utoipa::IntoParams;
use uuid::Uuid;

/// Largest body of `POST /register` and `/claim`, which strangers may call: an inventory of
/// 64 disks and 32 NICs is about 11 KB (measured by the API suite), so 64 KiB leaves room.
pub const REGISTER_BODY_LIMIT: usize = 64 << 10;

/// Extractor that only checks the protocol version header (unauthenticated endpoints).
pub struct Versioned;

impl axum::extract::FromRequestParts<AppStateRef> for Versioned {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &AppStateRef) -> ApiResult<Versioned> {
        check_protocol_version(parts)?;
        Ok(Versioned)
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Internal(e) => ApiError::from(e),
        other => {
            tracing::warn!(reason = %other, "bootstrap token refused");
            ApiError::unauthorized(other.to_string())
        }
    }
}

/// The machine credential a registering agent may send (`Authorization: Bearer kmc_...`):
/// the only proof that re-identifies a known machine. Other bearers (an API key) are ignored.
pub struct MaybeCredential(Option<String>);

impl axum::extract::FromRequestParts<AppStateRef> for MaybeCredential {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &AppStateRef) -> ApiResult<Self> {
        let cred = super::bearer(parts).filter(|b| b.starts_with("kmc_"));
        Ok(MaybeCredential(cred.map(str::to_string)))
    }
}

/// Re-identifies the machine holding `credential`: same identity, a new credential (the old
/// one is spent), the inventory refreshed.
async fn reidentify(
    st: &AppStateRef,
    credential: &str,
    req: &RegisterRequest,
    inventory: &str,
    now: i64,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let unknown = || {
        ApiError::unauthorized(
            "the machine credential sent with this registration is unknown or revoked; \
             register without it (a new machine) or with the machine's current credential",
        )
    };
    let row = sqlx::query("SELECT id FROM machines WHERE credential_hash = $1")
        .bind(hash_credential(credential))
        .fetch_optional(&st.db.pool)
        .await?
        .ok_or_else(unknown)?;
    let id = parse_uuid(&row.try_get::<String, _>("id")?)?;
    let fresh = new_credential("kmc_");
    let res = sqlx::query(
        "UPDATE machines SET credential_hash = $1, credential_issued_at = $2, inventory = $3, \
         hostname = COALESCE($4, hostname), last_seen_at = $2, environment = 'installer' \
         WHERE id = $5 AND credential_hash = $6",
    )
    .bind(hash_credential(&fresh))
    .bind(now)
    .bind(inventory)
    .bind(&req.inventory.hostname)
    .bind(id.to_string())
    .bind(hash_credential(credential))
    .execute(&st.db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(unknown());
    }
    tracing::info!(machine = %id, "machine re-identified by its credential");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse::Approved {
            machine_uuid: id,
            credential: fresh,
        }),
    ))
}

/// The machine of `account` a new registration with `system_uuid` may duplicate: the one
/// not itself flagged, when exactly one such machine has that UUID and it is no placeholder.
async fn duplicate_candidate(
    st: &AppState,
    account: Uuid,
    system_uuid: Option<&str>,
) -> ApiResult<Option<String>> {
    let Some(su) = system_uuid.filter(|s| !crate::smbios::is_placeholder(s)) else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT id FROM machines WHERE account_id = $1 AND LOWER(system_uuid) = $2 \
         AND duplicate_of IS NULL ORDER BY created_at LIMIT 2",
    )
    .bind(account.to_string())
    .bind(su.to_ascii_lowercase())
    .fetch_all(&st.db.pool)
    .await?;
    Ok(match rows.as_slice() {
        [one] => Some(one.try_get("id")?),
        _ => None,
    })
}

/// Registration with a bootstrap token: a new machine, approved at once, with the token's
/// roles. A token never yields a known machine's identity: when the system UUID matches one,
/// the new machine records it as `duplicate_of` for the operator (docs/protocol.md).
async fn register_with_token(
    st: &AppStateRef,
    token: &str,
    req: &RegisterRequest,
    inventory: &str,
    system_uuid: &Option<String>,
    now: i64,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let claims = st
        .tokens
        .verify(&st.db, token, OffsetDateTime::now_utc())
        .await
        .map_err(token_error)?;
    st.limiters
        .per_token
        .take(hash_credential(token), std::time::Instant::now())
        .map_err(|secs| too_many("registrations with this bootstrap token", secs))?;
    let roles = roles_by_name(st, claims.account, &claims.roles)
        .await
        .map_err(|e| {
            ApiError::conflict(format!(
                "the roles of this bootstrap token are no longer valid: {}",
                e.message
            ))
        })?;
    let credential = new_credential("kmc_");
    let duplicate_of = duplicate_candidate(st, claims.account, system_uuid.as_deref()).await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO machines (id, account_id, state, hostname, system_uuid, inventory, \
         credential_hash, credential_issued_at, environment, last_seen_at, created_at, duplicate_of) \
         VALUES ($1, $2, 'approved', $3, $4, $5, $6, $7, 'installer', $7, $7, $8)",
    )
    .bind(id.to_string())
    .bind(claims.account.to_string())
    .bind(&req.inventory.hostname)
    .bind(system_uuid)
    .bind(inventory)
    .bind(hash_credential(&credential))
    .bind(now)
    .bind(&duplicate_of)
    .execute(&st.db.pool)
    .await?;
    for role in roles {
        sqlx::query("INSERT INTO machine_roles (machine_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(id.to_string())
            .bind(role.id.to_string())
            .execute(&st.db.pool)
            .await?;
    }
    if let Some(d) = &duplicate_of {
        tracing::warn!(machine = %id, duplicate_of = %d, "machine registered with the system UUID of a known machine");
    }
    tracing::info!(machine = %id, account = %claims.account, "machine registered with bootstrap token");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse::Approved {
            machine_uuid: id,
            credential,
        }),
    ))
}

#[utoipa::path(post, path = "/api/agent/v1/register", tag = "agent", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 401, description = "token invalid, tampered, expired or of an unknown key, or machine credential unknown")))]
pub async fn register(
    State(st): State<AppStateRef>,
    ip: ClientIp,
    _: Versioned,
    MaybeCredential(credential): MaybeCredential,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let now = now_ms();
    let inventory = serde_json::to_string(&req.inventory).map_err(anyhow::Error::from)?;
    if let Some(credential) = &credential {
        return reidentify(&st, credential, &req, &inventory, now).await;
    }
    let system_uuid = req.inventory.system_uuid.clone().filter(|s| !s.is_empty());
    if let Some(token) = &req.token {
        rate_limit(
            &st.limiters.token_register,
            ip,
            "registrations with a bootstrap token",
        )?;
        return register_with_token(&st, token, &req, &inventory, &system_uuid, now).await;
    }
    rate_limit(&st.limiters.register, ip, "registrations without a token")?;
    sweep_pending(&st, now).await?;
    let id = Uuid::new_v4();
    let claim_secret = new_credential("kcs_");
    let (code, expires) = fresh_code(&st, now).await?;
    sqlx::query(
        "INSERT INTO machines (id, state, hostname, system_uuid, inventory, approval_code, code_expires_at, \
         claim_secret_hash, environment, last_seen_at, created_at) \
         VALUES ($1, 'pending_approval', $2, $3, $4, $5, $6, $7, 'installer', $8, $8)",
    )
    .bind(id.to_string())
    .bind(&req.inventory.hostname)
    .bind(&system_uuid)
    .bind(&inventory)
    .bind(&code)
    .bind(expires)
    .bind(hash_credential(&claim_secret))
    .bind(now)
    .execute(&st.db.pool)
    .await?;
    tracing::info!(machine = %id, "machine registered, waiting for approval");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse::PendingApproval {
            machine_uuid: id,
            approval_code: code,
            code_expires_at: crate::db::ms_to_time(expires),
            claim_secret,
        }),
    ))
}

/// A pending machine is deleted this long after its last approval code expired.
pub const PENDING_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// Deletes the machines still waiting for approval whose last code expired more than
/// [`PENDING_LIFETIME_MS`] ago (an agent that polls `/claim` gets fresh codes and stays);
/// counted in `/metrics` as `kiln_pending_machines_expired_total`. Runs on every anonymous
/// registration and periodically ([`crate::server`]).
pub async fn sweep_pending(st: &AppState, now: i64) -> ApiResult<u64> {
    let res = sqlx::query(
        "DELETE FROM machines WHERE state = 'pending_approval' AND account_id IS NULL \
         AND COALESCE(code_expires_at, created_at) < $1",
    )
    .bind(now - PENDING_LIFETIME_MS)
    .execute(&st.db.pool)
    .await?;
    let n = res.rows_affected();
    if n > 0 {
        st.metrics.pending_expired(n);
        tracing::info!(machines = n, "expired pending machines deleted");
    }
    Ok(n)
}

/// A code not used by another waiting machine, and its expiry.
async fn fresh_code(st: &AppState, now: i64) -> ApiResult<(String, i64)> {
    for _ in 0..20 {
        let code = approval::new_code();
        let taken = sqlx::query(
            "SELECT id FROM machines WHERE approval_code = $1 AND code_expires_at > $2",
        )
        .bind(&code)
        .bind(now)
        .fetch_optional(&st.db.pool)
        .await?;
        if taken.is_none() {
            return Ok((code, now + st.settings.approval_code_secs * 1000));
        }
    }
    Err(anyhow::anyhow!("could not find a free approval code in 20 tries").into())
}

#[utoipa::path(post, path = "/api/agent/v1/claim", tag = "agent", request_body = ClaimRequest,
    responses((status = 200, body = ClaimResponse)))]
pub async fn claim(
    State(st): State<AppStateRef>,
    ip: ClientIp,
    _: Versioned,
    Json(req): Json<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    rate_limit(&st.limiters.claim, ip, "claims")?;
    let now = now_ms();
    let row = sqlx::query(
        "SELECT state, approval_code, code_expires_at, credential_hash FROM machines WHERE id = $1 AND claim_secret_hash = $2",
    )
    .bind(req.machine_uuid.to_string())
    .bind(hash_credential(&req.claim_secret))
    .fetch_optional(&st.db.pool)
    .await?
    .ok_or_else(|| ApiError::unauthorized("unknown machine or wrong claim secret; register again"))?;
    let state: String = row.try_get("state")?;
    if state == "pending_approval" {
        let code: Option<String> = row.try_get("approval_code")?;
        let expires: Option<i64> = row.try_get("code_expires_at")?;
        let (code, expires) = match (code, expires) {
            (Some(c), Some(e)) if e > now => (c, e),
            _ => {
                let (c, e) = fresh_code(&st, now).await?;
                sqlx::query(
                    "UPDATE machines SET approval_code = $1, code_expires_at = $2 WHERE id = $3",
                )
                .bind(&c)
                .bind(e)
                .bind(req.machine_uuid.to_string())
                .execute(&st.db.pool)
                .await?;
                (c, e)
            }
        };
        sqlx::query("UPDATE machines SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(req.machine_uuid.to_string())
            .execute(&st.db.pool)
            .await?;
        return Ok(Json(ClaimResponse::PendingApproval {
            approval_code: code,
            code_expires_at: crate::db::ms_to_time(expires),
        }));
    }
    let credential = new_credential("kmc_");
    // The claim secret is single-use: the credential is handed out exactly once.
    let res = sqlx::query(
        "UPDATE machines SET credential_hash = $1, credential_issued_at = $2, claim_secret_hash = NULL, \
         last_seen_at = $2 WHERE id = $3 AND claim_secret_hash IS NOT NULL",
    )
    .bind(hash_credential(&credential))
    .bind(now)
    .bind(req.machine_uuid.to_string())
    .execute(&st.db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "the credential of this machine was already claimed",
        ));
    }
    Ok(Json(ClaimResponse::Approved { credential }))
}

#[utoipa::path(post, path = "/api/agent/v1/heartbeat", tag = "agent", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatResponse)))]
pub async fn heartbeat(
    State(st): State<AppStateRef>,
    agent: Agent,
    Json(hb): Json<Heartbeat>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let env = match hb.environment {
        kiln_protocol::AgentEnvironment::Installer => "installer",
        kiln_protocol::AgentEnvironment::Installed => "installed",
    };
    sqlx::query("UPDATE machines SET last_seen_at = $1, environment = $2 WHERE id = $3")
        .bind(now_ms())
        .bind(env)
        .bind(agent.machine.to_string())
        .execute(&st.db.pool)
        .await?;
    Ok(Json(HeartbeatResponse {
        interval_secs: st.settings.heartbeat_secs,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrdersQuery {
    /// The version of the last answer; omitted on the first call.
    pub after: Option<u64>,
    /// Seconds to wait for a change (0..=60, default 0).
    pub wait: Option<u64>,
}

async fn orders_version(st: &AppState, machine: Uuid) -> ApiResult<Option<u64>> {
    Ok(sqlx::query(
        "SELECT orders_version FROM machines WHERE id = $1 AND credential_hash IS NOT NULL",
    )
    .bind(machine.to_string())
    .fetch_optional(&st.db.pool)
    .await?
    .map(|r| r.try_get::<i64, _>("orders_version"))
    .transpose()?
    .map(|v| v as u64))
}

/// The current order of a machine: its active run, else its oldest pending action.
async fn current_order(st: &AppState, machine: Uuid) -> ApiResult<Option<Order>> {
    if let Some(run) = active_run(&st.db, machine).await? {
        let r = sqlx::query(
            "SELECT r.image_source, r.registry_credential_id, r.user_data, r.vendor_data, r.acked_seq, \
             m.kexec_installer FROM runs r JOIN machines m ON m.id = r.machine_id WHERE r.id = $1",
        )
        .bind(run.id.to_string())
        .fetch_one(&st.db.pool)
        .await?;
        let mut image: ImageSource = serde_json::from_str(&r.try_get::<String, _>("image_source")?)
            .map_err(anyhow::Error::from)?;
        if let Some(cred) = r.try_get::<Option<String>, _>("registry_credential_id")? {
            image.registry_auth = registry_auth(st, parse_uuid(&cred)?).await?;
        }
        return Ok(Some(Order::Provision(Box::new(ProvisionOrder {
            run_id: run.id,
            image,
            user_data: r.try_get("user_data")?,
            vendor_data: r.try_get("vendor_data")?,
            kexec_installer: r.try_get::<i64, _>("kexec_installer")? != 0,
            acked_seq: r.try_get::<i64, _>("acked_seq")? as u64,
        }))));
    }
    let action = sqlx::query(
        "SELECT id, kind FROM machine_actions WHERE machine_id = $1 AND status = 'pending' ORDER BY created_at LIMIT 1",
    )
    .bind(machine.to_string())
    .fetch_optional(&st.db.pool)
    .await?;
    Ok(match action {
        Some(a) => {
            let action_id = parse_uuid(&a.try_get::<String, _>("id")?)?;
            match a.try_get::<String, _>("kind")?.as_str() {
                "boot_installed_system" => Some(Order::BootInstalledSystem { action_id }),
                _ => Some(Order::Reboot { action_id }),
            }
        }
        None => None,
    })
}

#[utoipa::path(get, path = "/api/agent/v1/orders", tag = "agent", params(OrdersQuery),
    responses((status = 200, body = OrdersResponse)))]
pub async fn orders(
    State(st): State<AppStateRef>,
    agent: Agent,
    Query(q): Query<OrdersQuery>,
) -> ApiResult<Json<OrdersResponse>> {
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let deadline = tokio::time::Instant::now() + wait;
    let notify = st.notifier(agent.machine);
    let mut shutdown = st.shutdown.clone();
    // Other replicas cannot wake us: on PostgreSQL re-read the version every 2 s.
    let recheck = match st.db.backend {
        Backend::Postgres => Duration::from_secs(2),
        Backend::Sqlite => wait,
    };
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let version = orders_version(&st, agent.machine)
            .await?
            .ok_or_else(|| ApiError::unauthorized("machine credential revoked"))?;
        let now = tokio::time::Instant::now();
        if Some(version) != q.after || now >= deadline || *shutdown.borrow() {
            let order = current_order(&st, agent.machine).await?;
            return Ok(Json(OrdersResponse { version, order }));
        }
        let sleep = recheck.min(deadline - now);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Summary fields of a run changed by events.
struct RunSummary {
    status: RunStatus,
    percent: i64,
    step: Option<Step>,
    error: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl RunSummary {
    fn apply(&mut self, at: i64, event: &RunEvent) {
        if self.status.is_terminal() {
            return;
        }
        let start = |s: &mut RunSummary| {
            if s.status == RunStatus::Queued {
                s.status = RunStatus::InProgress;
                s.started_at.get_or_insert(at);
            }
        };
        match event {
            RunEvent::StepStarted { step } | RunEvent::StepCompleted { step } => {
                start(self);
                self.step = Some(*step);
            }
            RunEvent::Progress { step, percent } => {
                start(self);
                self.step = Some(*step);
                self.percent = self.percent.max((*percent).min(100) as i64);
            }
            RunEvent::Log { .. } => start(self),
            RunEvent::Completed => {
                start(self);
                self.status = RunStatus::Completed;
                self.percent = 100;
                self.finished_at = Some(at);
            }
            RunEvent::Failed { error } => {
                start(self);
                self.status = RunStatus::Failed;
                self.error = Some(error.clone());
                self.finished_at = Some(at);
            }
        }
    }
}

/// Refuses a batch that is too large or has a sequence number out of range.
fn check_batch(batch: &EventBatch) -> ApiResult<()> {
    if batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {MAX_BATCH} events, this one {}",
            batch.events.len()
        )));
    }
    if let Some(e) = batch
        .events
        .iter()
        .find(|e| e.seq == 0 || e.seq > i64::MAX as u64)
    {
        return Err(ApiError::bad_request(format!(
            "event sequence numbers start at 1, got {}",
            e.seq
        )));
    }
    Ok(())
}

/// The run's summary as stored (`status` parsed by the caller as `was`).
fn stored_summary(row: &sqlx::any::AnyRow, was: RunStatus) -> ApiResult<RunSummary> {
    Ok(RunSummary {
        status: was,
        percent: row.try_get("percent")?,
        step: row
            .try_get::<Option<String>, _>("current_step")?
            .as_deref()
            .and_then(Step::parse),
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Most events accepted in one batch.
pub const MAX_BATCH: usize = 1000;

#[utoipa::path(post, path = "/api/agent/v1/runs/{id}/events", tag = "agent", request_body = EventBatch,
    responses((status = 200, body = EventAck)))]
pub async fn events(
    State(st): State<AppStateRef>,
    agent: Agent,
    Path(run_id): Path<Uuid>,
    Json(batch): Json<EventBatch>,
) -> ApiResult<Json<EventAck>> {
    check_batch(&batch)?;
    let row = sqlx::query(
        "SELECT status, percent, current_step, error, started_at, finished_at, acked_seq FROM runs \
         WHERE id = $1 AND machine_id = $2",
    )
    .bind(run_id.to_string())
    .bind(agent.machine.to_string())
    .fetch_optional(&st.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("run {run_id} is not a run of this machine")))?;
    let acked: i64 = row.try_get("acked_seq")?;
    let mut tx = st.db.pool.begin().await?;
    for e in batch.events.iter().filter(|e| e.seq as i64 > acked) {
        let at = (e.at.unix_timestamp_nanos() / 1_000_000) as i64;
        sqlx::query("INSERT INTO run_events (run_id, seq, at, event) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, seq) DO NOTHING")
            .bind(run_id.to_string())
            .bind(e.seq as i64)
            .bind(at)
            .bind(serde_json::to_string(&e.event).map_err(anyhow::Error::from)?)
            .execute(&mut *tx)
            .await?;
    }
    // Apply the events that follow the acknowledged ones without a gap, in order.
    let pending = sqlx::query(
        "SELECT seq, at, event FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(run_id.to_string())
    .bind(acked)
    .fetch_all(&mut *tx)
    .await?;
    let was = RunStatus::parse(&row.try_get::<String, _>("status")?);
    let mut sum = stored_summary(&row, was)?;
    let mut new_acked = acked;
    for r in pending {
        let seq: i64 = r.try_get("seq")?;
        if seq != new_acked + 1 {
            break;
        }
        let event: RunEvent =
            serde_json::from_str(&r.try_get::<String, _>("event")?).map_err(anyhow::Error::from)?;
        sum.apply(r.try_get("at")?, &event);
        new_acked = seq;
    }
    if new_acked != acked {
        let res = sqlx::query(
            "UPDATE runs SET status = $1, percent = $2, current_step = $3, error = $4, started_at = $5, \
             finished_at = $6, acked_seq = $7 WHERE id = $8 AND acked_seq = $9",
        )
        .bind(sum.status.as_str())
        .bind(sum.percent)
        .bind(sum.step.map(|s| s.as_str()))
        .bind(&sum.error)
        .bind(sum.started_at)
        .bind(sum.finished_at)
        .bind(new_acked)
        .bind(run_id.to_string())
        .bind(acked)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            // A concurrent retry of the same batch applied it first.
            tx.rollback().await?;
            let r = sqlx::query("SELECT acked_seq FROM runs WHERE id = $1")
                .bind(run_id.to_string())
                .fetch_one(&st.db.pool)
                .await?;
            return Ok(Json(EventAck {
                acked_seq: r.try_get::<i64, _>("acked_seq")? as u64,
            }));
        }
        if !was.is_terminal() && sum.status.is_terminal() {
            let state = if sum.status == RunStatus::Completed {
                "installed"
            } else {
                "failed"
            };
            sqlx::query("UPDATE machines SET state = $1 WHERE id = $2")
                .bind(state)
                .bind(agent.machine.to_string())
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    if !was.is_terminal() && sum.status.is_terminal() {
        tracing::info!(run = %run_id, status = sum.status.as_str(), "provisioning run finished");
        st.orders_changed(agent.machine).await?;
    }
    Ok(Json(EventAck {
        acked_seq: new_acked as u64,
    }))
}

#[utoipa::path(post, path = "/api/agent/v1/actions/{id}/ack", tag = "agent", responses((status = 204)))]
pub async fn ack_action(
    State(st): State<AppStateRef>,
    agent: Agent,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let res = sqlx::query("UPDATE machine_actions SET status = 'done', acked_at = $1 WHERE id = $2 AND machine_id = $3")
        .bind(now_ms())
        .bind(id.to_string())
        .bind(agent.machine.to_string())
        .execute(&st.db.pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(ApiError::not_found(format!(
            "action {id} is not an action of this machine"
        )));
    }
    st.orders_changed(agent.machine).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/agent/v1/credential/rotate", tag = "agent",
    responses((status = 200, body = CredentialResponse)))]
pub async fn rotate_credential(
    State(st): State<AppStateRef>,
    agent: Agent,
) -> ApiResult<Json<CredentialResponse>> {
    let credential = new_credential("kmc_");
    sqlx::query(
        "UPDATE machines SET credential_hash = $1, credential_issued_at = $2 WHERE id = $3",
    )
    .bind(hash_credential(&credential))
    .bind(now_ms())
    .bind(agent.machine.to_string())
    .execute(&st.db.pool)
    .await?;
    tracing::info!(machine = %agent.machine, "machine credential rotated");
    Ok(Json(CredentialResponse { credential }))
}
