//! Images (official and custom), registry credentials, roles and account settings, with the
//! rules that tie them: one image per machine across its roles, and the image resolution
//! chain role image -> account default image -> error.

use super::names::validate_name;
use super::{ApiError, ApiResult, AppState, AppStateRef, User, parse_uuid};
use crate::db::{Db, ms_to_time, now_ms};
use anyhow::Context;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kiln_protocol::{ChecksumType, RawDisk};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

// ---------------------------------------------------------------- images

/// A catalog image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// Official images are global and read-only.
    pub official: bool,
    pub oci_url: Option<String>,
    pub registry_credential_id: Option<Uuid>,
    pub raw_disk: Option<RawDisk>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Body of image creation and update.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImageSpec {
    pub name: String,
    pub description: Option<String>,
    /// OCI reference, e.g. `ghcr.io/org/ubuntu:24.04`.
    pub oci_url: Option<String>,
    /// Registry credential id for a private registry.
    pub registry_credential_id: Option<Uuid>,
    /// Raw disk image URL (Metal3 OSImage style).
    pub raw_disk_url: Option<String>,
    /// Hex digest of the raw disk image.
    pub raw_checksum: Option<String>,
    /// md5, sha256 or sha512; detected from the digest length when absent.
    pub raw_checksum_type: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImageFilter {
    /// all (default), official or custom.
    pub filter: Option<String>,
}

fn image_from_row(r: &AnyRow) -> ApiResult<Image> {
    let raw_url: Option<String> = r.try_get("raw_url")?;
    let raw_disk = match raw_url {
        Some(url) => {
            let t: String = r.try_get("raw_checksum_type")?;
            Some(RawDisk {
                url,
                checksum: r.try_get("raw_checksum")?,
                checksum_type: ChecksumType::parse(&t)
                    .with_context(|| format!("stored checksum type {t:?}"))?,
            })
        }
        None => None,
    };
    let cred: Option<String> = r.try_get("registry_credential_id")?;
    Ok(Image {
        id: parse_uuid(&r.try_get::<String, _>("id")?)?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        official: r.try_get::<i64, _>("official")? != 0,
        oci_url: r.try_get("oci_url")?,
        registry_credential_id: cred.as_deref().map(parse_uuid).transpose()?,
        raw_disk,
        created_at: ms_to_time(r.try_get("created_at")?),
    })
}

const IMAGE_COLS: &str = "id, name, description, official, oci_url, registry_credential_id, \
                          raw_url, raw_checksum, raw_checksum_type, created_at";

/// Checks a raw disk checksum; returns the (lower-case) digest and its type.
pub fn check_raw_checksum(
    checksum: &str,
    kind: Option<&str>,
) -> Result<(String, ChecksumType), String> {
    let digest = checksum.trim().to_ascii_lowercase();
    if digest.is_empty() || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "raw disk checksum {checksum:?} is not a hex digest"
        ));
    }
    let t = match kind {
        Some(k) => ChecksumType::parse(k)
            .ok_or_else(|| format!("checksum type {k:?} is not one of md5, sha256, sha512"))?,
        None => ChecksumType::from_hex_len(digest.len()).ok_or_else(|| {
            format!(
                "cannot tell the checksum type from a {}-character digest (md5 has 32, sha256 64, \
                 sha512 128); give raw_checksum_type",
                digest.len()
            )
        })?,
    };
    if digest.len() != t.hex_len() {
        return Err(format!(
            "a {} digest has {} hex characters, this one has {}",
            t.as_str(),
            t.hex_len(),
            digest.len()
        ));
    }
    Ok((digest, t))
}

/// Validated image fields ready to store.
struct ImageFields {
    raw: Option<(String, String, ChecksumType)>,
}

async fn check_image_spec(
    st: &AppState,
    account: Uuid,
    spec: &ImageSpec,
) -> ApiResult<ImageFields> {
    validate_name("image", &spec.name)?;
    if spec.oci_url.as_deref().is_none_or(str::is_empty) && spec.raw_disk_url.is_none() {
        return Err(ApiError::bad_request(format!(
            "image {:?} needs an oci_url or a raw_disk_url",
            spec.name
        )));
    }
    if let Some(url) = &spec.oci_url
        && (url.contains(char::is_whitespace) || url.contains("://"))
    {
        return Err(ApiError::bad_request(format!(
            "oci_url {url:?} must be an OCI reference like ghcr.io/org/image:tag (no scheme, no spaces)"
        )));
    }
    if let Some(cred) = spec.registry_credential_id {
        let found =
            sqlx::query("SELECT id FROM registry_credentials WHERE id = $1 AND account_id = $2")
                .bind(cred.to_string())
                .bind(account.to_string())
                .fetch_optional(&st.db.pool)
                .await?;
        if found.is_none() {
            return Err(ApiError::not_found(format!(
                "registry credential {cred} not found"
            )));
        }
    }
    let raw = match (&spec.raw_disk_url, &spec.raw_checksum) {
        (None, None) => None,
        (Some(url), Some(sum)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ApiError::bad_request(format!(
                    "raw_disk_url {url:?} must be http(s)"
                )));
            }
            let (digest, t) = check_raw_checksum(sum, spec.raw_checksum_type.as_deref())
                .map_err(ApiError::bad_request)?;
            Some((url.clone(), digest, t))
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request("raw_disk_url needs raw_checksum"));
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "raw_checksum given without raw_disk_url",
            ));
        }
    };
    Ok(ImageFields { raw })
}

/// Finds an image visible to `account` by id or by name (custom names first, then official).
pub async fn find_image(db: &Db, account: Uuid, reference: &str) -> ApiResult<Image> {
    let row = if let Ok(id) = Uuid::parse_str(reference) {
        sqlx::query(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE id = $1 AND (account_id = $2 OR official = 1)"
        ))
        .bind(id.to_string())
        .bind(account.to_string())
        .fetch_optional(&db.pool)
        .await?
    } else {
        sqlx::query(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE name = $1 AND (account_id = $2 OR official = 1) \
             ORDER BY official LIMIT 1"
        ))
        .bind(reference)
        .bind(account.to_string())
        .fetch_optional(&db.pool)
        .await?
    };
    match row {
        Some(r) => image_from_row(&r),
        None => Err(ApiError::not_found(format!(
            "image {reference:?} not found"
        ))),
    }
}

#[utoipa::path(get, path = "/api/images", tag = "images", params(ImageFilter),
    responses((status = 200, body = Vec<Image>)))]
pub async fn list_images(
    State(st): State<AppStateRef>,
    user: User,
    Query(f): Query<ImageFilter>,
) -> ApiResult<Json<Vec<Image>>> {
    let cond = match f.filter.as_deref().unwrap_or("all") {
        "all" => "(account_id = $1 OR official = 1)",
        "official" => "(official = 1 AND $1 = $1)",
        "custom" => "(account_id = $1 AND official = 0)",
        other => {
            return Err(ApiError::bad_request(format!(
                "filter {other:?} is not one of all, official, custom"
            )));
        }
    };
    let rows = sqlx::query(&format!(
        "SELECT {IMAGE_COLS} FROM images WHERE {cond} ORDER BY official DESC, name"
    ))
    .bind(user.account.to_string())
    .fetch_all(&st.db.pool)
    .await?;
    rows.iter()
        .map(image_from_row)
        .collect::<ApiResult<Vec<_>>>()
        .map(Json)
}

#[utoipa::path(get, path = "/api/images/{id}", tag = "images", params(("id" = String, Path, description = "image id or name")),
    responses((status = 200, body = Image)))]
pub async fn get_image(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<String>,
) -> ApiResult<Json<Image>> {
    Ok(Json(find_image(&st.db, user.account, &id).await?))
}

#[utoipa::path(post, path = "/api/images", tag = "images", request_body = ImageSpec,
    responses((status = 201, body = Image)))]
pub async fn create_image(
    State(st): State<AppStateRef>,
    user: User,
    Json(spec): Json<ImageSpec>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    let fields = check_image_spec(&st, user.account, &spec).await?;
    let dup = sqlx::query("SELECT id FROM images WHERE account_id = $1 AND name = $2")
        .bind(user.account.to_string())
        .bind(&spec.name)
        .fetch_optional(&st.db.pool)
        .await?;
    if dup.is_some() {
        return Err(ApiError::conflict(format!(
            "an image named {:?} already exists in this account",
            spec.name
        )));
    }
    let id = Uuid::new_v4();
    let (raw_url, raw_sum, raw_type) = match fields.raw {
        Some((u, d, t)) => (Some(u), Some(d), Some(t.as_str())),
        None => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO images (id, account_id, official, name, description, oci_url, \
         registry_credential_id, raw_url, raw_checksum, raw_checksum_type, created_at) \
         VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id.to_string())
    .bind(user.account.to_string())
    .bind(&spec.name)
    .bind(&spec.description)
    .bind(&spec.oci_url)
    .bind(spec.registry_credential_id.map(|c| c.to_string()))
    .bind(raw_url)
    .bind(raw_sum)
    .bind(raw_type)
    .bind(now_ms())
    .execute(&st.db.pool)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(find_image(&st.db, user.account, &id.to_string()).await?),
    ))
}

fn refuse_official(image: &Image, verb: &str) -> ApiResult<()> {
    if image.official {
        return Err(ApiError::forbidden(format!(
            "image {:?} is an official image: official images are read-only and cannot be {verb}; \
             create a custom image instead",
            image.name
        )));
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/images/{id}", tag = "images", request_body = ImageSpec,
    responses((status = 200, body = Image)))]
pub async fn update_image(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<String>,
    Json(spec): Json<ImageSpec>,
) -> ApiResult<Json<Image>> {
    let image = find_image(&st.db, user.account, &id).await?;
    refuse_official(&image, "edited")?;
    let fields = check_image_spec(&st, user.account, &spec).await?;
    if spec.name != image.name {
        let dup = sqlx::query("SELECT id FROM images WHERE account_id = $1 AND name = $2")
            .bind(user.account.to_string())
            .bind(&spec.name)
            .fetch_optional(&st.db.pool)
            .await?;
        if dup.is_some() {
            return Err(ApiError::conflict(format!(
                "an image named {:?} already exists",
                spec.name
            )));
        }
    }
    let (raw_url, raw_sum, raw_type) = match fields.raw {
        Some((u, d, t)) => (Some(u), Some(d), Some(t.as_str())),
        None => (None, None, None),
    };
    sqlx::query(
        "UPDATE images SET name = $1, description = $2, oci_url = $3, registry_credential_id = $4, \
         raw_url = $5, raw_checksum = $6, raw_checksum_type = $7 WHERE id = $8 AND account_id = $9",
    )
    .bind(&spec.name)
    .bind(&spec.description)
    .bind(&spec.oci_url)
    .bind(spec.registry_credential_id.map(|c| c.to_string()))
    .bind(raw_url)
    .bind(raw_sum)
    .bind(raw_type)
    .bind(image.id.to_string())
    .bind(user.account.to_string())
    .execute(&st.db.pool)
    .await?;
    Ok(Json(
        find_image(&st.db, user.account, &image.id.to_string()).await?,
    ))
}

#[utoipa::path(delete, path = "/api/images/{id}", tag = "images", responses((status = 204)))]
pub async fn delete_image(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let image = find_image(&st.db, user.account, &id).await?;
    refuse_official(&image, "deleted")?;
    let roles: Vec<String> =
        sqlx::query("SELECT name FROM roles WHERE image_id = $1 ORDER BY name")
            .bind(image.id.to_string())
            .fetch_all(&st.db.pool)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
    if !roles.is_empty() {
        return Err(ApiError::conflict(format!(
            "image {:?} is used by roles {}; change those roles first",
            image.name,
            roles.join(", ")
        )));
    }
    let default = sqlx::query("SELECT id FROM accounts WHERE default_image_id = $1")
        .bind(image.id.to_string())
        .fetch_optional(&st.db.pool)
        .await?;
    if default.is_some() {
        return Err(ApiError::conflict(format!(
            "image {:?} is the account default image; change the default first",
            image.name
        )));
    }
    sqlx::query("DELETE FROM images WHERE id = $1 AND account_id = $2")
        .bind(image.id.to_string())
        .bind(user.account.to_string())
        .execute(&st.db.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One entry of the official catalog file.
#[derive(Debug, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub description: Option<String>,
    pub oci_url: Option<String>,
    pub raw_disk_url: Option<String>,
    pub raw_checksum: Option<String>,
    pub raw_checksum_type: Option<String>,
}

/// The official catalog file: `{"images": [CatalogEntry, ...]}`.
#[derive(Debug, Deserialize)]
pub struct CatalogFile {
    pub images: Vec<CatalogEntry>,
}

/// Makes the official images equal to the catalog file's. Official images missing from the
/// file are deleted unless a role or an account default still uses them (then kept, with a
/// warning). Returns (upserted, deleted).
pub async fn sync_catalog(db: &Db, text: &str) -> anyhow::Result<(usize, usize)> {
    let file: CatalogFile = serde_json::from_str(text).context("parsing the catalog file")?;
    let mut names = Vec::new();
    for e in &file.images {
        validate_name("image", &e.name).map_err(|e| anyhow::anyhow!(e.message))?;
        if e.oci_url.is_none() && e.raw_disk_url.is_none() {
            anyhow::bail!(
                "catalog image {:?} has neither oci_url nor raw_disk_url",
                e.name
            );
        }
        let raw = match (&e.raw_disk_url, &e.raw_checksum) {
            (Some(u), Some(s)) => {
                let (d, t) = check_raw_checksum(s, e.raw_checksum_type.as_deref())
                    .map_err(|m| anyhow::anyhow!("catalog image {:?}: {m}", e.name))?;
                Some((u.clone(), d, t.as_str()))
            }
            (None, None) => None,
            _ => anyhow::bail!(
                "catalog image {:?}: raw_disk_url and raw_checksum go together",
                e.name
            ),
        };
        let existing = sqlx::query("SELECT id FROM images WHERE official = 1 AND name = $1")
            .bind(&e.name)
            .fetch_optional(&db.pool)
            .await?;
        let (ru, rs, rt) = match raw {
            Some((u, d, t)) => (Some(u), Some(d), Some(t)),
            None => (None, None, None),
        };
        match existing {
            Some(row) => {
                let id: String = row.try_get("id")?;
                sqlx::query(
                    "UPDATE images SET description = $1, oci_url = $2, raw_url = $3, \
                     raw_checksum = $4, raw_checksum_type = $5 WHERE id = $6",
                )
                .bind(&e.description)
                .bind(&e.oci_url)
                .bind(ru)
                .bind(rs)
                .bind(rt)
                .bind(id)
                .execute(&db.pool)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO images (id, account_id, official, name, description, oci_url, \
                     raw_url, raw_checksum, raw_checksum_type, created_at) \
                     VALUES ($1, NULL, 1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(&e.name)
                .bind(&e.description)
                .bind(&e.oci_url)
                .bind(ru)
                .bind(rs)
                .bind(rt)
                .bind(now_ms())
                .execute(&db.pool)
                .await?;
            }
        }
        names.push(e.name.clone());
    }
    let mut deleted = 0;
    for row in sqlx::query("SELECT id, name FROM images WHERE official = 1")
        .fetch_all(&db.pool)
        .await?
    {
        let name: String = row.try_get("name")?;
        if names.contains(&name) {
            continue;
        }
        let id: String = row.try_get("id")?;
        let used = sqlx::query(
            "SELECT 1 AS x FROM roles WHERE image_id = $1 UNION SELECT 1 AS x FROM accounts WHERE default_image_id = $1",
        )
        .bind(&id)
        .fetch_optional(&db.pool)
        .await?;
        if used.is_some() {
            tracing::warn!(image = %name, "official image left the catalog but is still in use; kept");
            continue;
        }
        sqlx::query("DELETE FROM images WHERE id = $1")
            .bind(&id)
            .execute(&db.pool)
            .await?;
        deleted += 1;
    }
    Ok((names.len(), deleted))
}

// ---------------------------------------------------------------- registry credentials

/// A registry credential as the API shows it: never the password or token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryCredential {
    pub id: Uuid,
    /// Registry host, e.g. `ghcr.io`.
    pub registry: String,
    /// `basic` (username + password) or `token`.
    pub kind: String,
    pub username: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Body of registry credential creation. Give username + password, or token.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
pub struct CreateRegistryCredential {
    pub registry: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for CreateRegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateRegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn cred_from_row(r: &AnyRow) -> ApiResult<RegistryCredential> {
    Ok(RegistryCredential {
        id: parse_uuid(&r.try_get::<String, _>("id")?)?,
        registry: r.try_get("registry")?,
        kind: r.try_get("kind")?,
        username: r.try_get("username")?,
        created_at: ms_to_time(r.try_get("created_at")?),
    })
}

#[utoipa::path(get, path = "/api/registry-credentials", tag = "images",
    responses((status = 200, body = Vec<RegistryCredential>)))]
pub async fn list_creds(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<Json<Vec<RegistryCredential>>> {
    let rows = sqlx::query(
        "SELECT id, registry, kind, username, created_at FROM registry_credentials \
         WHERE account_id = $1 ORDER BY registry",
    )
    .bind(user.account.to_string())
    .fetch_all(&st.db.pool)
    .await?;
    rows.iter()
        .map(cred_from_row)
        .collect::<ApiResult<Vec<_>>>()
        .map(Json)
}

#[utoipa::path(post, path = "/api/registry-credentials", tag = "images", request_body = CreateRegistryCredential,
    responses((status = 201, body = RegistryCredential)))]
pub async fn create_cred(
    State(st): State<AppStateRef>,
    user: User,
    Json(req): Json<CreateRegistryCredential>,
) -> ApiResult<(StatusCode, Json<RegistryCredential>)> {
    let host = req.registry.trim();
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(ApiError::bad_request(format!(
            "registry {host:?} must be a host name (and port), e.g. ghcr.io"
        )));
    }
    let (kind, username, secret) = match (&req.username, &req.password, &req.token) {
        (Some(u), Some(p), None) if !u.is_empty() && !p.is_empty() => {
            ("basic", Some(u.clone()), p.clone())
        }
        (None, None, Some(t)) if !t.is_empty() => ("token", None, t.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "give either username and password, or token (not both, none empty)",
            ));
        }
    };
    let dup =
        sqlx::query("SELECT id FROM registry_credentials WHERE account_id = $1 AND registry = $2")
            .bind(user.account.to_string())
            .bind(host)
            .fetch_optional(&st.db.pool)
            .await?;
    if dup.is_some() {
        return Err(ApiError::conflict(format!(
            "a credential for registry {host:?} already exists; delete it first"
        )));
    }
    let id = Uuid::new_v4();
    let sealed = st
        .master
        .seal(&format!("registry-credential:{id}"), secret.as_bytes());
    sqlx::query(
        "INSERT INTO registry_credentials (id, account_id, registry, kind, username, secret_sealed, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.to_string())
    .bind(user.account.to_string())
    .bind(host)
    .bind(kind)
    .bind(&username)
    .bind(sealed)
    .bind(now_ms())
    .execute(&st.db.pool)
    .await?;
    tracing::info!(registry = %host, %kind, "registry credential stored");
    Ok((
        StatusCode::CREATED,
        Json(RegistryCredential {
            id,
            registry: host.to_string(),
            kind: kind.to_string(),
            username,
            created_at: OffsetDateTime::now_utc(),
        }),
    ))
}

#[utoipa::path(delete, path = "/api/registry-credentials/{id}", tag = "images", responses((status = 204)))]
pub async fn delete_cred(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let not_found = || ApiError::not_found(format!("registry credential {id} not found"));
    sqlx::query("SELECT id FROM registry_credentials WHERE id = $1 AND account_id = $2")
        .bind(id.to_string())
        .bind(user.account.to_string())
        .fetch_optional(&st.db.pool)
        .await?
        .ok_or_else(not_found)?;
    // Scoped by account too: never name another account's images.
    let used: Vec<String> = sqlx::query(
        "SELECT name FROM images WHERE registry_credential_id = $1 AND account_id = $2 ORDER BY name",
    )
    .bind(id.to_string())
    .bind(user.account.to_string())
    .fetch_all(&st.db.pool)
    .await?
    .iter()
    .map(|r| r.try_get("name"))
    .collect::<Result<_, _>>()?;
    if !used.is_empty() {
        return Err(ApiError::conflict(format!(
            "registry credential {id} is used by images {}",
            used.join(", ")
        )));
    }
    let res = sqlx::query("DELETE FROM registry_credentials WHERE id = $1 AND account_id = $2")
        .bind(id.to_string())
        .bind(user.account.to_string())
        .execute(&st.db.pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Opens a registry credential for the agent of a machine provisioning an image using it.
pub async fn registry_auth(
    st: &AppState,
    cred: Uuid,
) -> anyhow::Result<Option<kiln_protocol::RegistryAuth>> {
    let Some(r) =
        sqlx::query("SELECT kind, username, secret_sealed FROM registry_credentials WHERE id = $1")
            .bind(cred.to_string())
            .fetch_optional(&st.db.pool)
            .await?
    else {
        return Ok(None);
    };
    let kind: String = r.try_get("kind")?;
    let sealed: String = r.try_get("secret_sealed")?;
    let secret = String::from_utf8(
        st.master
            .open(&format!("registry-credential:{cred}"), &sealed)?,
    )
    .context("registry secret is not UTF-8")?;
    Ok(Some(match kind.as_str() {
        "basic" => kiln_protocol::RegistryAuth::Basic {
            username: r
                .try_get::<Option<String>, _>("username")?
                .unwrap_or_default(),
            password: secret,
        },
        _ => kiln_protocol::RegistryAuth::Token { token: secret },
    }))
}

// ---------------------------------------------------------------- roles

/// A machine role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    pub image_id: Option<Uuid>,
    pub image_name: Option<String>,
    /// cloud-init user-data (#cloud-config YAML, script or MIME multipart).
    pub user_data: Option<String>,
    pub vendor_data: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Body of role creation and (full) update.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RoleSpec {
    pub name: String,
    /// Image id or name (custom or official).
    pub image: Option<String>,
    pub user_data: Option<String>,
    pub vendor_data: Option<String>,
}

const ROLE_SELECT: &str = "SELECT r.id, r.name, r.image_id, i.name AS image_name, r.user_data, \
                           r.vendor_data, r.created_at FROM roles r LEFT JOIN images i ON i.id = r.image_id";

fn role_from_row(r: &AnyRow) -> ApiResult<Role> {
    let image: Option<String> = r.try_get("image_id")?;
    Ok(Role {
        id: parse_uuid(&r.try_get::<String, _>("id")?)?,
        name: r.try_get("name")?,
        image_id: image.as_deref().map(parse_uuid).transpose()?,
        image_name: r.try_get("image_name")?,
        user_data: r.try_get("user_data")?,
        vendor_data: r.try_get("vendor_data")?,
        created_at: ms_to_time(r.try_get("created_at")?),
    })
}

/// Refuses a set of roles in which more than one specifies an image, naming both.
pub fn check_one_image(roles: &[Role]) -> ApiResult<()> {
    let mut with_image = roles.iter().filter(|r| r.image_id.is_some());
    if let (Some(a), Some(b)) = (with_image.next(), with_image.next()) {
        return Err(ApiError::conflict(format!(
            "roles {:?} and {:?} both specify an image ({} and {}); only one role of a machine \
             may specify its image",
            a.name,
            b.name,
            a.image_name.as_deref().unwrap_or("?"),
            b.image_name.as_deref().unwrap_or("?"),
        )));
    }
    Ok(())
}

/// Looks roles up by name (all must exist) and checks the one-image rule.
pub async fn roles_by_name(st: &AppState, account: Uuid, names: &[String]) -> ApiResult<Vec<Role>> {
    let mut out: Vec<Role> = Vec::new();
    for name in names {
        if out.iter().any(|r| &r.name == name) {
            continue;
        }
        let row = sqlx::query(&format!(
            "{ROLE_SELECT} WHERE r.account_id = $1 AND r.name = $2"
        ))
        .bind(account.to_string())
        .bind(name)
        .fetch_optional(&st.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("role {name:?} does not exist")))?;
        out.push(role_from_row(&row)?);
    }
    check_one_image(&out)?;
    Ok(out)
}

/// The roles of a machine, ordered by name.
pub async fn machine_roles(db: &Db, machine: Uuid) -> ApiResult<Vec<Role>> {
    let rows = sqlx::query(&format!(
        "{ROLE_SELECT} JOIN machine_roles mr ON mr.role_id = r.id WHERE mr.machine_id = $1 ORDER BY r.name"
    ))
    .bind(machine.to_string())
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(role_from_row).collect()
}

async fn find_role(db: &Db, account: Uuid, reference: &str) -> ApiResult<Role> {
    let row = match Uuid::parse_str(reference) {
        Ok(id) => {
            sqlx::query(&format!(
                "{ROLE_SELECT} WHERE r.account_id = $1 AND r.id = $2"
            ))
            .bind(account.to_string())
            .bind(id.to_string())
            .fetch_optional(&db.pool)
            .await?
        }
        Err(_) => {
            sqlx::query(&format!(
                "{ROLE_SELECT} WHERE r.account_id = $1 AND r.name = $2"
            ))
            .bind(account.to_string())
            .bind(reference)
            .fetch_optional(&db.pool)
            .await?
        }
    };
    row.map(|r| role_from_row(&r))
        .transpose()?
        .ok_or_else(|| ApiError::not_found(format!("role {reference:?} not found")))
}

async fn check_role_spec(
    st: &AppState,
    account: Uuid,
    spec: &RoleSpec,
) -> ApiResult<Option<Image>> {
    validate_name("role", &spec.name)?;
    for (field, data) in [
        ("user_data", &spec.user_data),
        ("vendor_data", &spec.vendor_data),
    ] {
        if let Some(d) = data {
            crate::cloudinit::validate(&spec.name, field, d)
                .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
        }
    }
    match &spec.image {
        Some(i) => Ok(Some(find_image(&st.db, account, i).await?)),
        None => Ok(None),
    }
}

#[utoipa::path(get, path = "/api/roles", tag = "roles", responses((status = 200, body = Vec<Role>)))]
pub async fn list_roles(State(st): State<AppStateRef>, user: User) -> ApiResult<Json<Vec<Role>>> {
    let rows = sqlx::query(&format!(
        "{ROLE_SELECT} WHERE r.account_id = $1 ORDER BY r.name"
    ))
    .bind(user.account.to_string())
    .fetch_all(&st.db.pool)
    .await?;
    rows.iter()
        .map(role_from_row)
        .collect::<ApiResult<Vec<_>>>()
        .map(Json)
}

#[utoipa::path(get, path = "/api/roles/{id}", tag = "roles", params(("id" = String, Path, description = "role id or name")),
    responses((status = 200, body = Role)))]
pub async fn get_role(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<String>,
) -> ApiResult<Json<Role>> {
    Ok(Json(find_role(&st.db, user.account, &id).await?))
}

#[utoipa::path(post, path = "/api/roles", tag = "roles", request_body = RoleSpec, responses((status = 201, body = Role)))]
pub async fn create_role(
    State(st): State<AppStateRef>,
    user: User,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let image = check_role_spec(&st, user.account, &spec).await?;
    if find_role(&st.db, user.account, &spec.name).await.is_ok() {
        return Err(ApiError::conflict(format!(
            "role {:?} already exists",
            spec.name
        )));
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO roles (id, account_id, name, image_id, user_data, vendor_data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.to_string())
    .bind(user.account.to_string())
    .bind(&spec.name)
    .bind(image.map(|i| i.id.to_string()))
    .bind(&spec.user_data)
    .bind(&spec.vendor_data)
    .bind(now_ms())
    .execute(&st.db.pool)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(find_role(&st.db, user.account, &id.to_string()).await?),
    ))
}

#[utoipa::path(put, path = "/api/roles/{id}", tag = "roles", request_body = RoleSpec, responses((status = 200, body = Role)))]
pub async fn update_role(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<String>,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<Json<Role>> {
    let role = find_role(&st.db, user.account, &id).await?;
    let image = check_role_spec(&st, user.account, &spec).await?;
    if spec.name != role.name && find_role(&st.db, user.account, &spec.name).await.is_ok() {
        return Err(ApiError::conflict(format!(
            "role {:?} already exists",
            spec.name
        )));
    }
    if let Some(img) = &image {
        // Every machine with this role must keep at most one role with an image.
        let rows = sqlx::query(&format!(
            "{ROLE_SELECT} JOIN machine_roles mr ON mr.role_id = r.id WHERE r.image_id IS NOT NULL \
             AND r.id <> $1 AND mr.machine_id IN (SELECT machine_id FROM machine_roles WHERE role_id = $1) \
             ORDER BY r.name"
        ))
        .bind(role.id.to_string())
        .fetch_all(&st.db.pool)
        .await?;
        if let Some(r) = rows.first() {
            let other = role_from_row(r)?;
            let mut updated = role.clone();
            updated.name = spec.name.clone();
            updated.image_id = Some(img.id);
            updated.image_name = Some(img.name.clone());
            check_one_image(&[updated, other])?;
        }
    }
    sqlx::query(
        "UPDATE roles SET name = $1, image_id = $2, user_data = $3, vendor_data = $4 \
         WHERE id = $5 AND account_id = $6",
    )
    .bind(&spec.name)
    .bind(image.map(|i| i.id.to_string()))
    .bind(&spec.user_data)
    .bind(&spec.vendor_data)
    .bind(role.id.to_string())
    .bind(user.account.to_string())
    .execute(&st.db.pool)
    .await?;
    Ok(Json(
        find_role(&st.db, user.account, &role.id.to_string()).await?,
    ))
}

#[utoipa::path(delete, path = "/api/roles/{id}", tag = "roles", responses((status = 204)))]
pub async fn delete_role(
    State(st): State<AppStateRef>,
    user: User,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let role = find_role(&st.db, user.account, &id).await?;
    sqlx::query("DELETE FROM machine_roles WHERE role_id = $1")
        .bind(role.id.to_string())
        .execute(&st.db.pool)
        .await?;
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(role.id.to_string())
        .execute(&st.db.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- settings and resolution

/// Account settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountSettings {
    pub account_id: Uuid,
    pub account_name: String,
    pub default_image_id: Option<Uuid>,
    pub default_image_name: Option<String>,
}

/// Body of a settings update.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutSettings {
    /// Image id or name; null clears the default.
    pub default_image: Option<String>,
}

async fn settings_of(db: &Db, account: Uuid) -> ApiResult<AccountSettings> {
    let r = sqlx::query(
        "SELECT a.name, a.default_image_id, i.name AS image_name FROM accounts a \
         LEFT JOIN images i ON i.id = a.default_image_id WHERE a.id = $1",
    )
    .bind(account.to_string())
    .fetch_one(&db.pool)
    .await?;
    let img: Option<String> = r.try_get("default_image_id")?;
    Ok(AccountSettings {
        account_id: account,
        account_name: r.try_get("name")?,
        default_image_id: img.as_deref().map(parse_uuid).transpose()?,
        default_image_name: r.try_get("image_name")?,
    })
}

#[utoipa::path(get, path = "/api/account/settings", tag = "accounts", responses((status = 200, body = AccountSettings)))]
pub async fn get_settings(
    State(st): State<AppStateRef>,
    user: User,
) -> ApiResult<Json<AccountSettings>> {
    Ok(Json(settings_of(&st.db, user.account).await?))
}

#[utoipa::path(put, path = "/api/account/settings", tag = "accounts", request_body = PutSettings,
    responses((status = 200, body = AccountSettings)))]
pub async fn put_settings(
    State(st): State<AppStateRef>,
    user: User,
    Json(req): Json<PutSettings>,
) -> ApiResult<Json<AccountSettings>> {
    let image = match &req.default_image {
        Some(i) => Some(find_image(&st.db, user.account, i).await?.id.to_string()),
        None => None,
    };
    sqlx::query("UPDATE accounts SET default_image_id = $1 WHERE id = $2")
        .bind(image)
        .bind(user.account.to_string())
        .execute(&st.db.pool)
        .await?;
    Ok(Json(settings_of(&st.db, user.account).await?))
}

/// Where a machine's image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageOrigin {
    /// The image of the named role.
    Role(String),
    AccountDefault,
}

/// Resolves the image for a machine: the role's image, else the account default, else an
/// error saying what to configure.
pub async fn resolve_image(
    db: &Db,
    account: Uuid,
    roles: &[Role],
) -> ApiResult<(Image, ImageOrigin)> {
    check_one_image(roles)?;
    if let Some(role) = roles.iter().find(|r| r.image_id.is_some()) {
        let id = role.image_id.expect("filtered on image_id").to_string();
        let image = find_image(db, account, &id).await.map_err(|_| {
            ApiError::conflict(format!(
                "the image of role {:?} no longer exists",
                role.name
            ))
        })?;
        return Ok((image, ImageOrigin::Role(role.name.clone())));
    }
    let settings = settings_of(db, account).await?;
    match settings.default_image_id {
        Some(id) => Ok((
            find_image(db, account, &id.to_string()).await?,
            ImageOrigin::AccountDefault,
        )),
        None => Err(ApiError::conflict(
            "no image to provision: none of the machine's roles specifies an image and the account \
             has no default image; set one with `kilnctl settings set --default-image NAME` or give a role an image",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_checksums() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let sha512 = "ab".repeat(64);
        let cases: Vec<(&str, Option<&str>, Result<ChecksumType, &str>)> = vec![
            (md5, None, Ok(ChecksumType::Md5)),
            (sha256, None, Ok(ChecksumType::Sha256)),
            (&sha512, None, Ok(ChecksumType::Sha512)),
            (sha256, Some("sha256"), Ok(ChecksumType::Sha256)),
            (sha256, Some("md5"), Err("md5 digest has 32")),
            ("abc", None, Err("cannot tell")),
            ("xyz", None, Err("not a hex digest")),
            (md5, Some("sha1"), Err("not one of")),
        ];
        for (sum, kind, want) in cases {
            let got = check_raw_checksum(sum, kind);
            match want {
                Ok(t) => {
                    let (d, got_t) = got.unwrap();
                    assert_eq!(got_t, t);
                    assert_eq!(d, sum.to_ascii_lowercase());
                }
                Err(m) => assert!(got.unwrap_err().contains(m), "{sum} {kind:?}"),
            }
        }
    }

    fn role(name: &str, image: Option<&str>) -> Role {
        Role {
            id: Uuid::new_v4(),
            name: name.into(),
            image_id: image.map(|_| Uuid::new_v4()),
            image_name: image.map(str::to_string),
            user_data: None,
            vendor_data: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn one_image_rule_names_both_roles() {
        assert!(check_one_image(&[role("a", Some("ubuntu")), role("b", None)]).is_ok());
        let err = check_one_image(&[
            role("web", Some("ubuntu")),
            role("x", None),
            role("db", Some("debian")),
        ])
        .unwrap_err();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(
            err.message.contains("\"web\"") && err.message.contains("\"db\""),
            "{}",
            err.message
        );
    }
}
