//! Machines as people see them: approval by code, roles, kexec setting, credential
//! revocation, actions (BootInstalledSystem, reboot) and provisioning runs.

use super::catalog::{machine_roles, resolve_image, roles_by_name};
use super::{ApiError, ApiResult, AppState, AppStateRef, User, parse_uuid};
use crate::approval;
use crate::db::{Db, ms_to_time, now_ms};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kiln_protocol::{ImageSource, Inventory, RunEvent, Step};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// Machine states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    PendingApproval,
    Approved,
    Provisioning,
    Installed,
    Failed,
    /// No heartbeat for three intervals (computed, not stored).
    Offline,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::PendingApproval => "pending_approval",
            MachineState::Approved => "approved",
            MachineState::Provisioning => "provisioning",
            MachineState::Installed => "installed",
            MachineState::Failed => "failed",
            MachineState::Offline => "offline",
        }
    }

    fn parse(s: &str) -> MachineState {
        match s {
            "pending_approval" => MachineState::PendingApproval,
            "approved" => MachineState::Approved,
            "provisioning" => MachineState::Provisioning,
            "installed" => MachineState::Installed,
            _ => MachineState::Failed,
        }
    }
}

/// A machine.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Machine {
    pub id: Uuid,
    pub state: MachineState,
    pub hostname: Option<String>,
    pub roles: Vec<String>,
    pub kexec_installer: bool,
    /// Whether the machine holds a valid credential (false after revocation).
    pub has_credential: bool,
    /// `installer` or `installed`, from the last heartbeat.
    pub environment: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub inventory: Inventory,
    /// The machine this one may duplicate: registered with a bootstrap token and the SMBIOS
    /// UUID of that known machine (a reinstalled box, or someone holding the token). It never
    /// received that machine's identity; delete whichever record is stale.
    pub duplicate_of: Option<Uuid>,
}

const MACHINE_COLS: &str = "id, state, hostname, inventory, kexec_installer, credential_hash, duplicate_of, \
                            environment, last_seen_at, created_at";

/// The state shown: the stored one, or offline when heartbeats stopped.
pub fn effective_state(
    stored: MachineState,
    last_seen_ms: Option<i64>,
    now_ms: i64,
    heartbeat_secs: u64,
) -> MachineState {
    let limit = 3 * heartbeat_secs as i64 * 1000;
    match (stored, last_seen_ms) {
        (MachineState::PendingApproval, _) => stored,
        (_, Some(seen)) if now_ms - seen > limit => MachineState::Offline,
        (_, None) => MachineState::Offline,
        _ => stored,
    }
}

async fn machine_from_row(st: &AppState, r: &AnyRow) -> ApiResult<Machine> {
    let id = parse_uuid(&r.try_get::<String, _>("id")?)?;
    let last_seen: Option<i64> = r.try_get("last_seen_at")?;
    let stored = MachineState::parse(&r.try_get::<String, _>("state")?);
    let inventory: String = r.try_get("inventory")?;
    Ok(Machine {
        id,
        state: effective_state(stored, last_seen, now_ms(), st.settings.heartbeat_secs),
        hostname: r.try_get("hostname")?,
        roles: machine_roles(&st.db, id)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect(),
        kexec_installer: r.try_get::<i64, _>("kexec_installer")? != 0,
        has_credential: r.try_get::<Option<String>, _>("credential_hash")?.is_some(),
        environment: r.try_get("environment")?,
        last_seen_at: last_seen.map(ms_to_time),
        created_at: ms_to_time(r.try_get("created_at")?),
        inventory: serde_json::from_str(&inventory).unwrap_or_default(),
        duplicate_of: r
            .try_get::<Option<String>, _>("duplicate_of")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
    })
}

/// Loads a machine of `account`.
pub async fn load_machine(st: &AppState, account: Uuid, id: Uuid) -> ApiResult<Machine> {
    let row = sqlx::query(&format!(
        "SELECT {MACHINE_COLS} FROM machines WHERE id = $1 AND account_id = $2"
    ))
    .bind(id.to_string())
    .bind(account.to_string())
    .fetch_optional(&st.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("machine {id} not found")))?;
    machine_from_row(st, &row).await
}

#[utoipa::path(get, path = "/api/machines", tag = "machines", responses((status = 200, body = Vec<Machine>)))]
pub async fn list_machines(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<Json<Vec<Machine>>> {
    let rows = sqlx::query(&format!(
        "SELECT {MACHINE_COLS} FROM machines WHERE account_id = $1 ORDER BY created_at, id"
    ))
    .bind(user.account.to_string())
    .fetch_all(&st.db.pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(machine_from_row(&st, r).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/machines/{id}", tag = "machines", responses((status = 200, body = Machine)))]
pub async fn get_machine(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Machine>> {
    Ok(Json(load_machine(&st, user.account, id).await?))
}

#[utoipa::path(delete, path = "/api/machines/{id}", tag = "machines", responses((status = 204)))]
pub async fn delete_machine(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    load_machine(&st, user.account, id).await?;
    for table in [
        "run_events WHERE run_id IN (SELECT id FROM runs WHERE machine_id = $1)",
        "runs WHERE machine_id = $1",
        "machine_actions WHERE machine_id = $1",
        "machine_roles WHERE machine_id = $1",
        "machines WHERE id = $1",
    ] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .bind(id.to_string())
            .execute(&st.db.pool)
            .await?;
    }
    st.notifier(id).notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/machines/approve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApproveRequest {
    /// The 6-character code the machine shows.
    pub code: String,
    /// Roles to assign at approval.
    #[serde(default)]
    pub roles: Vec<String>,
}

async fn failures_in_window(db: &Db, account: Uuid, now: i64) -> ApiResult<(i64, Option<i64>)> {
    let r = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM approval_failures WHERE account_id = $1 AND at > $2")
        .bind(account.to_string())
        .bind(now - approval::FAILURE_WINDOW_MS)
        .fetch_one(&db.pool)
        .await?;
    Ok((r.try_get("n")?, r.try_get("oldest")?))
}

/// Records a wrong code and returns the error for it.
async fn record_failure(db: &Db, account: Uuid, now: i64, message: String) -> ApiError {
    let res = async {
        sqlx::query("INSERT INTO approval_failures (account_id, at) VALUES ($1, $2)")
            .bind(account.to_string())
            .bind(now)
            .execute(&db.pool)
            .await?;
        sqlx::query("DELETE FROM approval_failures WHERE at < $1")
            .bind(now - approval::FAILURE_WINDOW_MS)
            .execute(&db.pool)
            .await
    }
    .await;
    match res {
        Ok(_) => ApiError::not_found(message),
        Err(e) => ApiError::from(e),
    }
}

#[utoipa::path(post, path = "/api/machines/approve", tag = "machines", request_body = ApproveRequest,
    responses((status = 200, body = Machine), (status = 404, description = "unknown or expired code"),
              (status = 429, description = "locked out after too many wrong codes")))]
pub async fn approve(
    State(st): State<AppStateRef>,
    ip: super::ClientIp,
    user: User,
    Json(req): Json<ApproveRequest>,
) -> ApiResult<Json<Machine>> {
    super::rate_limit(&st.limiters.approve, ip, "approval attempts")?;
    let now = now_ms();
    let (failures, oldest) = failures_in_window(&st.db, user.account, now).await?;
    if failures >= approval::MAX_FAILURES {
        let retry_ms = oldest.unwrap_or(now) + approval::FAILURE_WINDOW_MS - now;
        let secs = (retry_ms.max(0) as u64).div_ceil(1000);
        tracing::warn!(account = %user.account, "approval locked out after repeated wrong codes");
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "approval is locked for this account after {failures} wrong codes in 15 minutes; \
                 try again in {secs} s"
            ),
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    let code = match approval::normalize(&req.code) {
        Ok(c) => c,
        Err(m) => return Err(record_failure(&st.db, user.account, now, m).await),
    };
    let row = sqlx::query(
        "SELECT id FROM machines WHERE approval_code = $1 AND state = 'pending_approval' AND code_expires_at > $2",
    )
    .bind(&code)
    .bind(now)
    .fetch_optional(&st.db.pool)
    .await?;
    let Some(row) = row else {
        let m = format!(
            "no machine is waiting with approval code {code}; codes expire after {} minutes, \
             the machine shows a fresh one",
            st.settings.approval_code_secs / 60
        );
        return Err(record_failure(&st.db, user.account, now, m).await);
    };
    let id = parse_uuid(&row.try_get::<String, _>("id")?)?;
    let roles = roles_by_name(&st, user.account, &req.roles).await?;
    let res = sqlx::query(
        "UPDATE machines SET account_id = $1, state = 'approved', approval_code = NULL, \
         code_expires_at = NULL, last_seen_at = $2 WHERE id = $3 AND state = 'pending_approval'",
    )
    .bind(user.account.to_string())
    .bind(now)
    .bind(id.to_string())
    .execute(&st.db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(ApiError::conflict(format!(
            "machine {id} was approved concurrently"
        )));
    }
    for role in roles {
        sqlx::query("INSERT INTO machine_roles (machine_id, role_id) VALUES ($1, $2)")
            .bind(id.to_string())
            .bind(role.id.to_string())
            .execute(&st.db.pool)
            .await?;
    }
    tracing::info!(machine = %id, account = %user.account, "machine approved");
    st.notifier(id).notify_waiters();
    Ok(Json(load_machine(&st, user.account, id).await?))
}

/// Body of `PATCH /api/provisioning/machines/{uuid}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PatchMachine {
    /// Re-provision by kexec into the installer instead of a firmware reboot (default false;
    /// keep false on NVIDIA GPU machines).
    pub kexec_installer: Option<bool>,
    pub hostname: Option<String>,
}

#[utoipa::path(patch, path = "/api/provisioning/machines/{id}", tag = "machines", request_body = PatchMachine,
    responses((status = 200, body = Machine)))]
pub async fn patch_machine(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
    Json(req): Json<PatchMachine>,
) -> ApiResult<Json<Machine>> {
    load_machine(&st, user.account, id).await?;
    if let Some(k) = req.kexec_installer {
        sqlx::query("UPDATE machines SET kexec_installer = $1 WHERE id = $2")
            .bind(k as i64)
            .bind(id.to_string())
            .execute(&st.db.pool)
            .await?;
    }
    if let Some(h) = &req.hostname {
        sqlx::query("UPDATE machines SET hostname = $1 WHERE id = $2")
            .bind(h)
            .bind(id.to_string())
            .execute(&st.db.pool)
            .await?;
    }
    Ok(Json(load_machine(&st, user.account, id).await?))
}

/// Body of `PUT /api/machines/{id}/roles`: the complete role list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetRoles {
    pub roles: Vec<String>,
}

#[utoipa::path(put, path = "/api/machines/{id}/roles", tag = "machines", request_body = SetRoles,
    responses((status = 200, body = Machine), (status = 409, description = "two roles specify an image")))]
pub async fn set_roles(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
    Json(req): Json<SetRoles>,
) -> ApiResult<Json<Machine>> {
    load_machine(&st, user.account, id).await?;
    let roles = roles_by_name(&st, user.account, &req.roles).await?;
    let mut tx = st.db.pool.begin().await?;
    sqlx::query("DELETE FROM machine_roles WHERE machine_id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    for role in roles {
        sqlx::query("INSERT INTO machine_roles (machine_id, role_id) VALUES ($1, $2)")
            .bind(id.to_string())
            .bind(role.id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Json(load_machine(&st, user.account, id).await?))
}

#[utoipa::path(delete, path = "/api/machines/{id}/credential", tag = "machines", responses((status = 204)))]
pub async fn revoke_credential(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    load_machine(&st, user.account, id).await?;
    sqlx::query("UPDATE machines SET credential_hash = NULL WHERE id = $1")
        .bind(id.to_string())
        .execute(&st.db.pool)
        .await?;
    tracing::info!(machine = %id, "machine credential revoked");
    st.notifier(id).notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// A machine action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// kexec from the installer / maintenance environment into the installed system.
    BootInstalledSystem,
    Reboot,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateAction {
    pub action: ActionKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Action {
    pub id: Uuid,
    pub machine_id: Uuid,
    pub action: ActionKind,
    /// pending or done.
    pub status: String,
}

#[utoipa::path(post, path = "/api/machines/{id}/actions", tag = "machines", request_body = CreateAction,
    responses((status = 201, body = Action)))]
pub async fn create_action(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
    Json(req): Json<CreateAction>,
) -> ApiResult<(StatusCode, Json<Action>)> {
    let machine = load_machine(&st, user.account, id).await?;
    if req.action == ActionKind::BootInstalledSystem && active_run(&st.db, id).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "machine {id} is provisioning; its installed system is being replaced"
        )));
    }
    if machine.state == MachineState::PendingApproval {
        return Err(ApiError::conflict(format!("machine {id} is not approved")));
    }
    let action_id = Uuid::new_v4();
    let kind = match req.action {
        ActionKind::BootInstalledSystem => "boot_installed_system",
        ActionKind::Reboot => "reboot",
    };
    sqlx::query("INSERT INTO machine_actions (id, machine_id, kind, status, created_at) VALUES ($1, $2, $3, 'pending', $4)")
        .bind(action_id.to_string())
        .bind(id.to_string())
        .bind(kind)
        .bind(now_ms())
        .execute(&st.db.pool)
        .await?;
    st.orders_changed(id).await?;
    Ok((
        StatusCode::CREATED,
        Json(Action {
            id: action_id,
            machine_id: id,
            action: req.action,
            status: "pending".into(),
        }),
    ))
}

// ---------------------------------------------------------------- runs

/// Status of a provisioning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> RunStatus {
        match s {
            "queued" => RunStatus::Queued,
            "in_progress" => RunStatus::InProgress,
            "completed" => RunStatus::Completed,
            _ => RunStatus::Failed,
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed)
    }
}

/// State of one step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepStatus {
    pub step: Step,
    pub name: String,
    pub state: StepState,
}

/// One stored event of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunEventRecord {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub event: RunEvent,
}

/// A provisioning run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub machine_id: Uuid,
    pub status: RunStatus,
    pub percent: u8,
    pub current_step: Option<Step>,
    pub steps: Vec<StepStatus>,
    pub image_name: String,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The full event history (only on `GET /api/runs/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<RunEventRecord>>,
}

/// Step list derived from the run's status and current step.
pub fn step_list(status: RunStatus, current: Option<Step>) -> Vec<StepStatus> {
    Step::ALL
        .into_iter()
        .map(|step| {
            let state = match (status, current) {
                (RunStatus::Completed, _) => StepState::Done,
                (_, None) => StepState::Pending,
                (_, Some(cur)) if step < cur => StepState::Done,
                (RunStatus::Failed, Some(cur)) if step == cur => StepState::Failed,
                (_, Some(cur)) if step == cur => StepState::Running,
                _ => StepState::Pending,
            };
            StepStatus {
                step,
                name: step.to_string(),
                state,
            }
        })
        .collect()
}

pub const RUN_COLS: &str = "id, machine_id, status, percent, current_step, image_name, error, created_at, \
                            started_at, finished_at";

pub fn run_from_row(r: &AnyRow) -> ApiResult<Run> {
    let status = RunStatus::parse(&r.try_get::<String, _>("status")?);
    let current = r
        .try_get::<Option<String>, _>("current_step")?
        .as_deref()
        .and_then(Step::parse);
    Ok(Run {
        id: parse_uuid(&r.try_get::<String, _>("id")?)?,
        machine_id: parse_uuid(&r.try_get::<String, _>("machine_id")?)?,
        status,
        percent: r.try_get::<i64, _>("percent")?.clamp(0, 100) as u8,
        current_step: current,
        steps: step_list(status, current),
        image_name: r.try_get("image_name")?,
        error: r.try_get("error")?,
        created_at: ms_to_time(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(ms_to_time),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(ms_to_time),
        events: None,
    })
}

/// The queued or in-progress run of a machine.
pub async fn active_run(db: &Db, machine: Uuid) -> ApiResult<Option<Run>> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE machine_id = $1 AND status IN ('queued', 'in_progress') \
         ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(machine.to_string())
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| run_from_row(&r)).transpose()
}

/// A run insert refused by the one-active-run index (`runs_one_active`): a concurrent
/// request won the race.
fn already_active(machine: Uuid, e: sqlx::Error) -> ApiError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => ApiError::conflict(format!(
            "machine {machine} already has an active run (started by a concurrent request)"
        )),
        _ => e.into(),
    }
}

/// Body of `POST /api/machines/{id}/provision`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ProvisionRequest {
    /// Required when the machine has an installed system or earlier runs: its disk will be
    /// overwritten.
    #[serde(default)]
    pub confirm_overwrite: bool,
}

#[utoipa::path(post, path = "/api/machines/{id}/provision", tag = "provisioning", request_body = ProvisionRequest,
    responses((status = 201, body = Run), (status = 409, description = "needs confirmation, already provisioning, or no image")))]
pub async fn provision(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
    Json(req): Json<ProvisionRequest>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let machine = load_machine(&st, user.account, id).await?;
    if let Some(run) = active_run(&st.db, id).await? {
        return Err(ApiError::conflict(format!(
            "machine {id} already has run {} ({})",
            run.id,
            run.status.as_str()
        )));
    }
    let earlier: i64 = sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE machine_id = $1")
        .bind(id.to_string())
        .fetch_one(&st.db.pool)
        .await?
        .try_get("n")?;
    if (earlier > 0 || machine.environment.as_deref() == Some("installed"))
        && !req.confirm_overwrite
    {
        return Err(ApiError::conflict(format!(
            "machine {id} was provisioned before: re-provisioning overwrites all data on its disk; \
             confirm with confirm_overwrite=true (kilnctl provision start --yes)"
        )));
    }
    let roles = machine_roles(&st.db, id).await?;
    let (image, _origin) = resolve_image(&st.db, user.account, &roles).await?;
    let user_data = crate::cloudinit::merge(
        &roles
            .iter()
            .map(|r| (r.name.clone(), r.user_data.clone()))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| ApiError::conflict(format!("merging user-data: {e:#}")))?;
    let vendor_data = crate::cloudinit::merge(
        &roles
            .iter()
            .map(|r| (r.name.clone(), r.vendor_data.clone()))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| ApiError::conflict(format!("merging vendor-data: {e:#}")))?;
    let source = ImageSource {
        name: image.name.clone(),
        oci_url: image.oci_url.clone(),
        registry_auth: None,
        raw_disk: image.raw_disk.clone(),
    };
    let run_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO runs (id, machine_id, account_id, status, percent, image_id, image_name, image_source, \
         registry_credential_id, user_data, vendor_data, created_at) \
         VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(run_id.to_string())
    .bind(id.to_string())
    .bind(user.account.to_string())
    .bind(image.id.to_string())
    .bind(&image.name)
    .bind(serde_json::to_string(&source).map_err(anyhow::Error::from)?)
    .bind(image.registry_credential_id.map(|c| c.to_string()))
    .bind(user_data)
    .bind(vendor_data)
    .bind(now_ms())
    .execute(&st.db.pool)
    .await
    .map_err(|e| already_active(id, e))?;
    sqlx::query("UPDATE machines SET state = 'provisioning' WHERE id = $1")
        .bind(id.to_string())
        .execute(&st.db.pool)
        .await?;
    st.orders_changed(id).await?;
    tracing::info!(machine = %id, run = %run_id, image = %image.name, "provisioning queued");
    Ok((
        StatusCode::CREATED,
        Json(get_run_inner(&st.db, user.account, run_id, false).await?),
    ))
}

#[utoipa::path(get, path = "/api/machines/{id}/runs", tag = "provisioning", responses((status = 200, body = Vec<Run>)))]
pub async fn list_runs(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<Run>>> {
    load_machine(&st, user.account, id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE machine_id = $1 ORDER BY created_at DESC"
    ))
    .bind(id.to_string())
    .fetch_all(&st.db.pool)
    .await?;
    rows.iter()
        .map(run_from_row)
        .collect::<ApiResult<Vec<_>>>()
        .map(Json)
}

async fn get_run_inner(db: &Db, account: Uuid, id: Uuid, events: bool) -> ApiResult<Run> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE id = $1 AND account_id = $2"
    ))
    .bind(id.to_string())
    .bind(account.to_string())
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    let mut run = run_from_row(&row)?;
    if events {
        let rows =
            sqlx::query("SELECT seq, at, event FROM run_events WHERE run_id = $1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&db.pool)
                .await?;
        let mut list = Vec::new();
        for r in rows {
            let text: String = r.try_get("event")?;
            list.push(RunEventRecord {
                seq: r.try_get::<i64, _>("seq")? as u64,
                at: ms_to_time(r.try_get("at")?),
                event: serde_json::from_str(&text).map_err(anyhow::Error::from)?,
            });
        }
        run.events = Some(list);
    }
    Ok(run)
}

#[utoipa::path(get, path = "/api/runs/{id}", tag = "provisioning", responses((status = 200, body = Run)))]
pub async fn get_run(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Run>> {
    Ok(Json(get_run_inner(&st.db, user.account, id, true).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_after_three_missed_heartbeats() {
        use MachineState::*;
        let cases = [
            (Installed, Some(1_000), 1_000 + 89_000, Installed),
            (Installed, Some(1_000), 1_000 + 91_000, Offline),
            (PendingApproval, Some(0), 10_000_000, PendingApproval),
            (Approved, None, 5, Offline),
        ];
        for (stored, seen, now, want) in cases {
            assert_eq!(
                effective_state(stored, seen, now, 30),
                want,
                "{stored:?} {seen:?} {now}"
            );
        }
    }

    #[test]
    fn step_list_follows_status() {
        let l = step_list(RunStatus::InProgress, Some(Step::LayerExtraction));
        assert_eq!(l[2].state, StepState::Done);
        assert_eq!(l[3].state, StepState::Running);
        assert_eq!(l[4].state, StepState::Pending);
        let l = step_list(RunStatus::Failed, Some(Step::PartitionResize));
        assert_eq!(l[2].state, StepState::Failed);
        assert!(
            step_list(RunStatus::Completed, None)
                .iter()
                .all(|s| s.state == StepState::Done)
        );
        assert!(
            step_list(RunStatus::Queued, None)
                .iter()
                .all(|s| s.state == StepState::Pending)
        );
    }
}
