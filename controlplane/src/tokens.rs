//! Bootstrap tokens: stateless JWE (`dir` + `A256GCM`) carrying the account, expiry and the
//! roles to assign. No row per token; the server keeps only its token keys (sealed with the
//! master key in `token_keys`). The newest active key encrypts; every active key decrypts,
//! so rotation does not break tokens already handed out until their key is retired.

use crate::db::{Db, now_ms};
use crate::jwe::{self, Enc, JweError};
use crate::secrets::MasterKey;
use anyhow::{Context, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

/// The lifetimes a bootstrap token may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Lifetime {
    #[default]
    #[serde(rename = "10m")]
    TenMinutes,
    #[serde(rename = "1d")]
    OneDay,
    #[serde(rename = "7d")]
    SevenDays,
    #[serde(rename = "30d")]
    ThirtyDays,
    #[serde(rename = "90d")]
    NinetyDays,
    #[serde(rename = "365d")]
    OneYear,
}

impl Lifetime {
    pub const ALL: [Lifetime; 6] = [
        Lifetime::TenMinutes,
        Lifetime::OneDay,
        Lifetime::SevenDays,
        Lifetime::ThirtyDays,
        Lifetime::NinetyDays,
        Lifetime::OneYear,
    ];

    pub fn seconds(self) -> i64 {
        const DAY: i64 = 86_400;
        match self {
            Lifetime::TenMinutes => 600,
            Lifetime::OneDay => DAY,
            Lifetime::SevenDays => 7 * DAY,
            Lifetime::ThirtyDays => 30 * DAY,
            Lifetime::NinetyDays => 90 * DAY,
            Lifetime::OneYear => 365 * DAY,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lifetime::TenMinutes => "10m",
            Lifetime::OneDay => "1d",
            Lifetime::SevenDays => "7d",
            Lifetime::ThirtyDays => "30d",
            Lifetime::NinetyDays => "90d",
            Lifetime::OneYear => "365d",
        }
    }

    pub fn parse(s: &str) -> Option<Lifetime> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// What a bootstrap token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Claims format version.
    pub v: u32,
    pub account: Uuid,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Why a bootstrap token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("bootstrap token rejected: {0}")]
    Jwe(#[from] JweError),
    #[error("bootstrap token expired at {0}; create a new one (kilnctl token create)")]
    Expired(String),
    #[error("bootstrap token rejected: its content is not Kiln token claims")]
    BadClaims,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// An active or retired token key, as listed to admins (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenKeyInfo {
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<OffsetDateTime>,
    /// The key new tokens are encrypted with.
    pub current: bool,
}

/// The token key store.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    master: MasterKey,
}

impl TokenKeys {
    pub fn new(master: MasterKey) -> Self {
        TokenKeys { master }
    }

    /// Ensures an active key exists (first start).
    pub async fn ensure_key(&self, db: &Db) -> Result<()> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM token_keys WHERE retired_at IS NULL")
            .fetch_one(&db.pool)
            .await
            .context("counting token keys")?;
        if row.try_get::<i64, _>("n")? == 0 {
            self.rotate(db).await?;
        }
        Ok(())
    }

    /// Creates a new key and makes it current. Returns its key id.
    pub async fn rotate(&self, db: &Db) -> Result<String> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let kid = format!("tk-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let sealed = self.master.seal(&format!("token-key:{kid}"), &key);
        sqlx::query("INSERT INTO token_keys (kid, key_sealed, created_at) VALUES ($1, $2, $3)")
            .bind(&kid)
            .bind(sealed)
            .bind(now_ms())
            .execute(&db.pool)
            .await
            .context("storing new token key")?;
        Ok(kid)
    }

    /// Retires `kid`: tokens encrypted with it stop working. The last active key cannot be
    /// retired (rotate first).
    pub async fn retire(&self, db: &Db, kid: &str) -> Result<Result<(), String>> {
        let keys = self.list(db).await?;
        let Some(key) = keys.iter().find(|k| k.kid == kid) else {
            return Ok(Err(format!("token key {kid:?} does not exist")));
        };
        if key.retired_at.is_some() {
            return Ok(Err(format!("token key {kid:?} is already retired")));
        }
        if keys.iter().filter(|k| k.retired_at.is_none()).count() == 1 {
            return Ok(Err(format!(
                "token key {kid:?} is the only active key; rotate first, then retire it"
            )));
        }
        sqlx::query("UPDATE token_keys SET retired_at = $1 WHERE kid = $2")
            .bind(now_ms())
            .bind(kid)
            .execute(&db.pool)
            .await
            .with_context(|| format!("retiring token key {kid}"))?;
        Ok(Ok(()))
    }

    pub async fn list(&self, db: &Db) -> Result<Vec<TokenKeyInfo>> {
        let rows = sqlx::query(
            "SELECT kid, created_at, retired_at FROM token_keys ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&db.pool)
        .await
        .context("listing token keys")?;
        let mut out = Vec::new();
        let mut seen_current = false;
        for row in rows {
            let retired: Option<i64> = row.try_get("retired_at")?;
            let current = retired.is_none() && !seen_current;
            seen_current |= current;
            out.push(TokenKeyInfo {
                kid: row.try_get("kid")?,
                created_at: crate::db::ms_to_time(row.try_get("created_at")?),
                retired_at: retired.map(crate::db::ms_to_time),
                current,
            });
        }
        Ok(out)
    }

    async fn active_key(&self, db: &Db, kid: Option<&str>) -> Result<Option<(String, Vec<u8>)>> {
        let row = match kid {
            Some(kid) => sqlx::query(
                "SELECT kid, key_sealed FROM token_keys WHERE kid = $1 AND retired_at IS NULL",
            )
            .bind(kid)
            .fetch_optional(&db.pool)
            .await
            .context("loading token key")?,
            None => sqlx::query(
                "SELECT kid, key_sealed FROM token_keys WHERE retired_at IS NULL \
                 ORDER BY created_at DESC, kid DESC LIMIT 1",
            )
            .fetch_optional(&db.pool)
            .await
            .context("loading current token key")?,
        };
        let Some(row) = row else { return Ok(None) };
        let kid: String = row.try_get("kid")?;
        let sealed: String = row.try_get("key_sealed")?;
        let key = self.master.open(&format!("token-key:{kid}"), &sealed)?;
        Ok(Some((kid, key)))
    }

    /// Issues a token for `account` valid for `lifetime` from `now`.
    pub async fn issue(
        &self,
        db: &Db,
        account: Uuid,
        lifetime: Lifetime,
        roles: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime)> {
        let (kid, key) = self
            .active_key(db, None)
            .await?
            .context("no active token key; restart the server")?;
        let iat = now.unix_timestamp();
        let claims = Claims {
            v: 1,
            account,
            iat,
            exp: iat + lifetime.seconds(),
            roles,
        };
        let mut iv = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut iv);
        let token = jwe::encrypt(Enc::A256Gcm, &kid, &key, iv, &serde_json::to_vec(&claims)?);
        let exp = OffsetDateTime::from_unix_timestamp(claims.exp).context("expiry out of range")?;
        Ok((token, exp))
    }

    /// Decrypts and checks a token at time `now`.
    pub async fn verify(
        &self,
        db: &Db,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Claims, TokenError> {
        let kid = jwe::key_id(token)?;
        let key = self.active_key(db, Some(&kid)).await?.map(|(_, key)| key);
        let plain = jwe::decrypt(token, |_| key)?;
        let claims: Claims = serde_json::from_slice(&plain).map_err(|_| TokenError::BadClaims)?;
        if claims.v != 1 {
            return Err(TokenError::BadClaims);
        }
        if now.unix_timestamp() >= claims.exp {
            let at = OffsetDateTime::from_unix_timestamp(claims.exp)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| claims.exp.to_string());
            return Err(TokenError::Expired(at));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_and_last() {
        let cases = [
            ("10m", 600),
            ("1d", 86_400),
            ("7d", 604_800),
            ("30d", 2_592_000),
            ("90d", 7_776_000),
            ("365d", 31_536_000),
        ];
        for (name, secs) in cases {
            let l = Lifetime::parse(name).unwrap();
            assert_eq!(l.seconds(), secs, "{name}");
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(Lifetime::default(), Lifetime::TenMinutes);
        assert!(Lifetime::parse("2d").is_none());
    }
}
