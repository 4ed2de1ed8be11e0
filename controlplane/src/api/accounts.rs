//! Accounts, API keys, bootstrap tokens and token key rotation.

use super::names::validate_name;
use super::{ApiError, ApiResult, AppStateRef, User, parse_uuid};
use crate::db::{Db, ms_to_time, now_ms};
use crate::secrets::{hash_credential, new_credential};
use crate::tokens::{Lifetime, TokenKeyInfo};
use anyhow::Context;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// An account (organization).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateAccount {
    pub name: String,
}

/// A new account and the first API key for it (shown once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedAccount {
    pub account: Account,
    pub api_key: String,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub is_admin: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub revoked: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateApiKey {
    pub name: String,
    /// Admin keys may create accounts and rotate token keys. Only admins may create them.
    #[serde(default)]
    pub admin: bool,
    /// Account of the new key (admins only; default: the caller's account).
    pub account_id: Option<Uuid>,
}

/// A new API key (shown once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub info: ApiKeyInfo,
    pub key: String,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    /// 10m (default), 1d, 7d, 30d, 90d or 365d.
    #[serde(default)]
    pub lifetime: Lifetime,
    /// Roles assigned to machines registering with the token.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A bootstrap token (stateless: the server keeps no record of it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub lifetime: Lifetime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub roles: Vec<String>,
}

/// Creates the first account and an admin key when the database has no account. Returns the
/// key to print once.
pub async fn bootstrap_admin(db: &Db, account_name: &str) -> anyhow::Result<Option<String>> {
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
        .fetch_one(&db.pool)
        .await
        .context("counting accounts")?
        .try_get("n")?;
    if n > 0 {
        return Ok(None);
    }
    let account = insert_account(db, account_name).await?;
    let (_, key) = insert_key(db, account.id, "bootstrap admin", true).await?;
    Ok(Some(key))
}

async fn insert_account(db: &Db, name: &str) -> anyhow::Result<Account> {
    let account = Account {
        id: Uuid::new_v4(),
        name: name.to_string(),
        created_at: ms_to_time(now_ms()),
    };
    sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(account.id.to_string())
        .bind(&account.name)
        .bind(now_ms())
        .execute(&db.pool)
        .await
        .with_context(|| format!("creating account {name:?}"))?;
    Ok(account)
}

async fn insert_key(
    db: &Db,
    account: Uuid,
    name: &str,
    admin: bool,
) -> anyhow::Result<(ApiKeyInfo, String)> {
    let key = new_credential("kiln_");
    let info = ApiKeyInfo {
        id: Uuid::new_v4(),
        account_id: account,
        name: name.to_string(),
        is_admin: admin,
        created_at: ms_to_time(now_ms()),
        revoked: false,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, key_hash, is_admin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(info.id.to_string())
    .bind(account.to_string())
    .bind(name)
    .bind(hash_credential(&key))
    .bind(admin as i64)
    .bind(now_ms())
    .execute(&db.pool)
    .await
    .with_context(|| format!("creating API key {name:?}"))?;
    Ok((info, key))
}

#[utoipa::path(get, path = "/api/accounts", tag = "accounts", responses((status = 200, body = Vec<Account>)))]
pub async fn list_accounts(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<Json<Vec<Account>>> {
    user.require_admin()?;
    let rows = sqlx::query("SELECT id, name, created_at FROM accounts ORDER BY name")
        .fetch_all(&st.db.pool)
        .await?;
    let mut out = Vec::new();
    for r in rows {
        out.push(Account {
            id: parse_uuid(&r.try_get::<String, _>("id")?)?,
            name: r.try_get("name")?,
            created_at: ms_to_time(r.try_get("created_at")?),
        });
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/accounts", tag = "accounts", request_body = CreateAccount,
    responses((status = 201, body = CreatedAccount)))]
pub async fn create_account(
    State(st): State<AppStateRef>,
    user: User,
    Json(req): Json<CreateAccount>,
) -> ApiResult<(StatusCode, Json<CreatedAccount>)> {
    user.require_admin()?;
    validate_name("account", &req.name)?;
    let exists = sqlx::query("SELECT id FROM accounts WHERE name = $1")
        .bind(&req.name)
        .fetch_optional(&st.db.pool)
        .await?;
    if exists.is_some() {
        return Err(ApiError::conflict(format!(
            "account {:?} already exists",
            req.name
        )));
    }
    let account = insert_account(&st.db, &req.name).await?;
    let (_, api_key) = insert_key(&st.db, account.id, "initial", false).await?;
    tracing::info!(account = %account.id, name = %account.name, "account created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedAccount { account, api_key }),
    ))
}

#[utoipa::path(get, path = "/api/api-keys", tag = "accounts", responses((status = 200, body = Vec<ApiKeyInfo>)))]
pub async fn list_keys(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    let rows = sqlx::query(
        "SELECT id, account_id, name, is_admin, created_at, revoked_at FROM api_keys \
         WHERE account_id = $1 ORDER BY created_at",
    )
    .bind(user.account.to_string())
    .fetch_all(&st.db.pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        out.push(ApiKeyInfo {
            id: parse_uuid(&r.try_get::<String, _>("id")?)?,
            account_id: parse_uuid(&r.try_get::<String, _>("account_id")?)?,
            name: r.try_get("name")?,
            is_admin: r.try_get::<i64, _>("is_admin")? != 0,
            created_at: ms_to_time(r.try_get("created_at")?),
            revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        });
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/api-keys", tag = "accounts", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey)))]
pub async fn create_key(
    State(st): State<AppStateRef>,
    user: User,
    Json(req): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    if req.admin || req.account_id.is_some_and(|a| a != user.account) {
        user.require_admin()?;
    }
    let account = req.account_id.unwrap_or(user.account);
    let exists = sqlx::query("SELECT id FROM accounts WHERE id = $1")
        .bind(account.to_string())
        .fetch_optional(&st.db.pool)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!(
            "account {account} does not exist"
        )));
    }
    let (info, key) = insert_key(&st.db, account, &req.name, req.admin).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { info, key })))
}

#[utoipa::path(delete, path = "/api/api-keys/{id}", tag = "accounts", responses((status = 204)))]
pub async fn revoke_key(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let res = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND account_id = $3 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(id.to_string())
    .bind(user.account.to_string())
    .execute(&st.db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(ApiError::not_found(format!(
            "API key {id} not found or already revoked"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/bootstrap-tokens", tag = "machines", request_body = CreateToken,
    responses((status = 201, body = CreatedToken)))]
pub async fn create_token(
    State(st): State<AppStateRef>,
    user: User,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    // Roles must exist and obey the one-image rule now, not only when machines arrive.
    super::catalog::roles_by_name(&st, user.account, &req.roles).await?;
    let (token, expires_at) = st
        .tokens
        .issue(
            &st.db,
            user.account,
            req.lifetime,
            req.roles.clone(),
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            lifetime: req.lifetime,
            expires_at,
            roles: req.roles,
        }),
    ))
}

#[utoipa::path(get, path = "/api/admin/token-keys", tag = "admin", responses((status = 200, body = Vec<TokenKeyInfo>)))]
pub async fn list_token_keys(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<Json<Vec<TokenKeyInfo>>> {
    user.require_admin()?;
    Ok(Json(st.tokens.list(&st.db).await?))
}

#[utoipa::path(post, path = "/api/admin/token-keys/rotate", tag = "admin", responses((status = 201, body = Vec<TokenKeyInfo>)))]
pub async fn rotate_token_key(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<(StatusCode, Json<Vec<TokenKeyInfo>>)> {
    user.require_admin()?;
    let kid = st.tokens.rotate(&st.db).await?;
    tracing::info!(%kid, "token key rotated");
    Ok((StatusCode::CREATED, Json(st.tokens.list(&st.db).await?)))
}

#[utoipa::path(delete, path = "/api/admin/token-keys/{kid}", tag = "admin", responses((status = 204)))]
pub async fn retire_token_key(
    State(st): State<AppStateRef>,
    user: User,
    Path(kid): Path<String>,
) -> ApiResult<StatusCode> {
    user.require_admin()?;
    st.tokens
        .retire(&st.db, &kid)
        .await?
        .map_err(ApiError::conflict)?;
    tracing::info!(%kid, "token key retired");
    Ok(StatusCode::NO_CONTENT)
}
