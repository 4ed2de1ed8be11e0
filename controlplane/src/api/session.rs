//! Dashboard sessions: sign in with an API key, get a cookie.
//!
//! `POST /api/session` checks the key and sets `kiln_session`, a random id (never the key)
//! in an HttpOnly, `SameSite=Strict`, `Secure` cookie; the database keeps only its hash, the
//! API key it stands for and an expiry. Every request that changes something with the
//! cookie must carry the session's CSRF token in `X-CSRF-Token` and, when the browser sends
//! one, an `Origin` equal to this server's. `DELETE /api/session` signs out.

use super::{ApiError, ApiResult, AppStateRef, User, parse_uuid};
use crate::db::{ms_to_time, now_ms};
use crate::secrets::{hash_credential, new_credential};
use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;

/// Name of the session cookie.
pub const COOKIE: &str = "kiln_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lives.
pub const SESSION_SECS: i64 = 12 * 3600;

/// Body of `POST /api/session`.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    pub api_key: String,
}

/// The signed-in session as the page sees it (no secret but its own CSRF token).
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    pub csrf_token: String,
    pub account_id: String,
    pub account_name: String,
    pub key_name: String,
    pub is_admin: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The value of the session cookie, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

fn set_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("session cookie is ASCII")
}

/// Refuses a change whose `Origin` is not this server (when the browser sends one).
fn check_origin(headers: &HeaderMap) -> ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if origin == format!("https://{host}") {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "cross-origin request from {origin:?} refused; use the dashboard at https://{host}/"
        )))
    }
}

const SESSION_SQL: &str = "SELECT s.csrf_token, s.expires_at, k.id AS key_id, k.name AS key_name, \
     k.is_admin, k.account_id, a.name AS account_name FROM web_sessions s \
     JOIN api_keys k ON k.id = s.api_key_id AND k.revoked_at IS NULL \
     JOIN accounts a ON a.id = k.account_id WHERE s.id_hash = $1";

/// Loads the session of a cookie value: the caller and what the page may see.
async fn load(st: &AppStateRef, value: &str) -> ApiResult<(User, SessionInfo)> {
    let row = sqlx::query(SESSION_SQL)
        .bind(hash_credential(value))
        .fetch_optional(&st.db.pool)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                "unknown or signed-out session (or its API key was revoked); sign in again",
            )
        })?;
    let expires: i64 = row.try_get("expires_at")?;
    if expires <= now_ms() {
        return Err(ApiError::unauthorized("session expired; sign in again"));
    }
    let user = User {
        account: parse_uuid(&row.try_get::<String, _>("account_id")?)?,
        key_id: parse_uuid(&row.try_get::<String, _>("key_id")?)?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
    };
    let info = SessionInfo {
        csrf_token: row.try_get("csrf_token")?,
        account_id: user.account.to_string(),
        account_name: row.try_get("account_name")?,
        key_name: row.try_get("key_name")?,
        is_admin: user.is_admin,
        expires_at: ms_to_time(expires),
    };
    Ok((user, info))
}

/// The caller of a request authenticated by session cookie, or `None` without the cookie.
/// Requests other than GET and HEAD must carry the CSRF token and a same-origin `Origin`.
pub async fn user_from_cookie(parts: &Parts, st: &AppStateRef) -> ApiResult<Option<User>> {
    let Some(value) = cookie(&parts.headers) else {
        return Ok(None);
    };
    let (user, info) = load(st, value).await?;
    if parts.method != Method::GET && parts.method != Method::HEAD {
        check_origin(&parts.headers)?;
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if sent.is_empty() || sent != info.csrf_token {
            return Err(ApiError::forbidden(
                "missing or wrong X-CSRF-Token for this session; reload the dashboard",
            ));
        }
    }
    Ok(Some(user))
}

/// `POST /api/session`: signs in with an API key.
pub async fn sign_in(
    State(st): State<AppStateRef>,
    headers: HeaderMap,
    Json(req): Json<SignIn>,
) -> ApiResult<Response> {
    check_origin(&headers)?;
    let key = req.api_key.trim();
    let key_id = User::of_api_key(&st.db, key)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                "unknown or revoked API key; check the key (it starts with kiln_)",
            )
        })?
        .key_id
        .to_string();
    let value = new_credential("ks_");
    let now = now_ms();
    sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&st.db.pool)
        .await?;
    sqlx::query("INSERT INTO web_sessions (id_hash, api_key_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash_credential(&value))
        .bind(&key_id)
        .bind(new_credential("kcsrf_"))
        .bind(now)
        .bind(now + SESSION_SECS * 1000)
        .execute(&st.db.pool)
        .await?;
    tracing::info!(key = %key_id, "dashboard session started");
    let (_, info) = load(&st, &value).await?;
    let mut resp = (StatusCode::CREATED, Json(info)).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&value, SESSION_SECS));
    Ok(resp)
}

/// `GET /api/session`: the current session (the page's CSRF token after a reload).
pub async fn current(
    State(st): State<AppStateRef>,
    headers: HeaderMap,
) -> ApiResult<Json<SessionInfo>> {
    let value = cookie(&headers).ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    Ok(Json(load(&st, value).await?.1))
}

/// `DELETE /api/session`: signs out (deletes the session, clears the cookie).
pub async fn sign_out(State(st): State<AppStateRef>, parts: Parts) -> ApiResult<Response> {
    let value = cookie(&parts.headers).ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    user_from_cookie(&parts, &st).await?;
    sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
        .bind(hash_credential(value))
        .execute(&st.db.pool)
        .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["a=1"], None),
            (&["kiln_session=ks_x"], Some("ks_x")),
            (&["a=1; kiln_session=ks_y; b=2"], Some("ks_y")),
            (&["a=1", "kiln_session=ks_z"], Some("ks_z")),
            (&["kiln_sessionx=ks_no"], None),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for h in *headers {
                map.append(header::COOKIE, HeaderValue::from_str(h).unwrap());
            }
            assert_eq!(cookie(&map), *want, "{headers:?}");
        }
    }

    #[test]
    fn origin_must_be_this_server() {
        let cases = [
            (None, true),
            (Some("https://kiln.lan:8443"), true),
            (Some("http://kiln.lan:8443"), false),
            (Some("https://evil.example"), false),
            (Some("null"), false),
        ];
        for (origin, ok) in cases {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_static("kiln.lan:8443"));
            if let Some(o) = origin {
                map.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            assert_eq!(check_origin(&map).is_ok(), ok, "{origin:?}");
        }
    }

    #[test]
    fn cookie_attributes() {
        let v = set_cookie("ks_abc", 60);
        let v = v.to_str().unwrap();
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(v.contains(attr), "{v} lacks {attr}");
        }
    }
}
