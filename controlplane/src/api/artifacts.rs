//! Installer artifacts: files built by `scripts/build-*` into `out/`, served from the
//! configured artifacts directory; the ISO is a template (`scripts/build-iso --template`)
//! served with this server's URL, CA pin and optionally a fresh bootstrap token baked into
//! its grub.cfg (see [`crate::iso`]); `/boot.ipxe` chains the vmlinuz with the same
//! parameters; `install.sh` is generated with this server's URL and CA pin.

use super::{ApiError, ApiResult, AppState, AppStateRef, User};
use crate::iso;
use crate::tokens::Lifetime;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::io::Seek;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// The artifacts Kiln serves and the script that builds each.
pub const ARTIFACTS: [(&str, &str, &str); 3] = [
    (
        "vmlinuz",
        "application/octet-stream",
        "scripts/build-installer",
    ),
    (
        "kiln-agent",
        "application/octet-stream",
        "scripts/build-agent",
    ),
    (
        "kiln.iso",
        "application/x-iso9660-image",
        "scripts/build-iso --template",
    ),
];

/// One artifact and whether it is present.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArtifactInfo {
    pub name: String,
    pub url: String,
    pub available: bool,
    pub size_bytes: Option<u64>,
    /// How to produce it when missing.
    pub build_hint: Option<String>,
}

#[utoipa::path(get, path = "/artifacts", tag = "artifacts", responses((status = 200, body = Vec<ArtifactInfo>)))]
pub async fn index(State(st): State<AppStateRef>) -> Json<Vec<ArtifactInfo>> {
    let mut out = Vec::new();
    for (name, _, script) in ARTIFACTS {
        let meta = tokio::fs::metadata(st.settings.artifacts_dir.join(name))
            .await
            .ok()
            .filter(|m| m.is_file());
        out.push(ArtifactInfo {
            name: name.into(),
            url: format!("{}/artifacts/{name}", st.settings.public_url),
            available: meta.is_some(),
            size_bytes: meta.as_ref().map(|m| m.len()),
            build_hint: meta.is_none().then(|| hint(&st, name, script)),
        });
    }
    Json(out)
}

#[utoipa::path(get, path = "/artifacts/{name}", tag = "artifacts",
    responses((status = 200, description = "the file"), (status = 404, description = "unknown or not built")))]
pub async fn file(State(st): State<AppStateRef>, Path(name): Path<String>) -> ApiResult<Response> {
    let Some((_, mime, script)) = ARTIFACTS.iter().find(|(n, _, _)| *n == name) else {
        let known: Vec<&str> = ARTIFACTS.iter().map(|a| a.0).collect();
        return Err(ApiError::not_found(format!(
            "no artifact {name:?}; artifacts are {}",
            known.join(", ")
        )));
    };
    if name == "kiln.iso" {
        let params = boot_params(&st, None).await?;
        return serve_iso(&st, params).await;
    }
    let path = st.settings.artifacts_dir.join(&name);
    let Ok(f) = tokio::fs::File::open(&path).await else {
        return Err(ApiError::not_found(format!(
            "artifact {name} is not built on this server: {}",
            hint(&st, &name, script)
        )));
    };
    let len = f.metadata().await.map_err(anyhow::Error::from)?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024));
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

fn hint(st: &AppState, name: &str, script: &str) -> String {
    let out = match name {
        "vmlinuz" => "kiln-installer.vmlinuz",
        "kiln.iso" => "kiln-template.iso",
        other => other,
    };
    format!(
        "run {script}, then copy out/{out} to {}",
        st.settings.artifacts_dir.join(name).display()
    )
}

/// Query of `/api/installer/iso` and `/boot.ipxe`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct InstallerQuery {
    /// Bake a new bootstrap token of this lifetime (10m, 1d, 7d, 30d, 90d or 365d) so machines
    /// skip approval; needs an API key, the token belongs to its account.
    pub token_ttl: Option<String>,
    /// Roles the baked token assigns, comma separated.
    pub roles: Option<String>,
}

/// The `kiln.*` kernel parameters for this server: URL, CA pin and, when asked for by an
/// authenticated caller, a new bootstrap token.
async fn boot_params(
    st: &AppState,
    token: Option<(&User, &InstallerQuery)>,
) -> ApiResult<Vec<String>> {
    let mut params = vec![
        format!("kiln.url={}", st.settings.public_url),
        format!("kiln.ca=sha256:{}", st.settings.ca_sha256),
    ];
    if let Some((user, q)) = token
        && let Some(ttl) = &q.token_ttl
    {
        let lifetime = Lifetime::parse(ttl).ok_or_else(|| {
            let all: Vec<&str> = Lifetime::ALL.iter().map(|l| l.as_str()).collect();
            ApiError::bad_request(format!(
                "token_ttl {ttl:?} is not a token lifetime; use one of {}",
                all.join(", ")
            ))
        })?;
        let roles: Vec<String> = q
            .roles
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        super::catalog::roles_by_name(st, user.account, &roles).await?;
        let (token, expires) = st
            .tokens
            .issue(
                &st.db,
                user.account,
                lifetime,
                roles,
                OffsetDateTime::now_utc(),
            )
            .await?;
        tracing::info!(account = %user.account, %expires, "bootstrap token baked into an installer");
        // The kernel prints its command line on every console at boot unless `quiet`: a
        // token must not end up in serial logs and BMC console captures.
        params.push("quiet".to_string());
        params.push(format!("kiln.token={token}"));
    }
    Ok(params)
}

/// The caller's API key when one is sent (the installer endpoints also answer anonymously).
pub struct MaybeUser(pub Option<User>);

impl FromRequestParts<AppStateRef> for MaybeUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppStateRef) -> ApiResult<MaybeUser> {
        if parts.headers.contains_key(header::AUTHORIZATION)
            || super::session::cookie(&parts.headers).is_some()
        {
            Ok(MaybeUser(Some(User::from_request_parts(parts, st).await?)))
        } else {
            Ok(MaybeUser(None))
        }
    }
}

fn token_request<'a>(
    user: &'a MaybeUser,
    q: &'a InstallerQuery,
) -> ApiResult<Option<(&'a User, &'a InstallerQuery)>> {
    match (&user.0, &q.token_ttl) {
        (_, None) if q.roles.is_some() => Err(ApiError::bad_request(
            "roles are assigned by a baked bootstrap token: give token_ttl too",
        )),
        (_, None) => Ok(None),
        (None, Some(_)) => Err(ApiError::unauthorized(
            "baking a bootstrap token (token_ttl) needs an API key: send `Authorization: Bearer kiln_...`",
        )),
        (Some(u), Some(_)) => Ok(Some((u, q))),
    }
}

/// Streams the ISO template with `params` baked into its placeholder.
async fn serve_iso(st: &AppState, params: Vec<String>) -> ApiResult<Response> {
    let path = st.settings.artifacts_dir.join("kiln.iso");
    let missing = || {
        ApiError::not_found(format!(
            "the installer ISO is not built on this server: {}",
            hint(st, "kiln.iso", "scripts/build-iso --template")
        ))
    };
    let f = std::fs::File::open(&path).map_err(|_| missing())?;
    let meta = f.metadata().map_err(anyhow::Error::from)?;
    let key = (meta.len(), meta.modified().ok());
    let cached = st
        .iso_cache
        .lock()
        .expect("iso cache poisoned")
        .filter(|c| (c.0, c.1) == key);
    let (f, ph) = match cached {
        Some((_, _, ph)) => (f, ph),
        None => {
            let what = path.display().to_string();
            let (f, located) = tokio::task::spawn_blocking(move || {
                let mut f = f;
                let r = iso::locate(&mut f, &what).and_then(|ph| {
                    // Serve from the start again.
                    f.seek(std::io::SeekFrom::Start(0))
                        .map(|_| ph)
                        .map_err(|source| iso::IsoError::Io { what, source })
                });
                (f, r)
            })
            .await
            .map_err(anyhow::Error::from)?;
            let ph = located.map_err(|e| {
                tracing::error!(error = %e, "cannot serve the installer ISO");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?;
            *st.iso_cache.lock().expect("iso cache poisoned") = Some((key.0, key.1, ph));
            (f, ph)
        }
    };
    let patch = iso::render(&params, ph.len).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let reader = iso::AsyncPatched::new(tokio::fs::File::from_std(f), ph.offset, patch);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        reader,
        256 * 1024,
    ));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/x-iso9660-image".to_string(),
            ),
            (header::CONTENT_LENGTH, meta.len().to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"kiln.iso\"".to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/installer/iso", tag = "artifacts", params(InstallerQuery),
    responses((status = 200, description = "the installer ISO with this server's URL, CA pin and optionally a bootstrap token in its kernel command line"),
        (status = 401, description = "token_ttl without an API key"),
        (status = 404, description = "no ISO template on this server")))]
pub async fn installer_iso(
    State(st): State<AppStateRef>,
    user: MaybeUser,
    Query(q): Query<InstallerQuery>,
) -> ApiResult<Response> {
    let params = boot_params(&st, token_request(&user, &q)?).await?;
    serve_iso(&st, params).await
}

/// The iPXE script: boots the served vmlinuz with the same parameters as the ISO.
pub fn render_ipxe(public_url: &str, params: &[String]) -> String {
    format!(
        "#!ipxe\n\
         # Kiln installer from {public_url}. iPXE must trust the Kiln CA for https\n\
         # (build it with TRUST=<ca.pem> or fetch this script with `imgtrust`).\n\
         kernel {public_url}/artifacts/vmlinuz console=tty0 console=ttyS0,115200 {}\n\
         boot\n",
        params.join(" ")
    )
}

#[utoipa::path(get, path = "/boot.ipxe", tag = "artifacts", params(InstallerQuery),
    responses((status = 200, description = "iPXE script")))]
pub async fn boot_ipxe(
    State(st): State<AppStateRef>,
    user: MaybeUser,
    Query(q): Query<InstallerQuery>,
) -> ApiResult<Response> {
    let params = boot_params(&st, token_request(&user, &q)?).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        render_ipxe(&st.settings.public_url, &params),
    )
        .into_response())
}

/// The install script for an already running Linux, with URL and CA pin filled in.
pub fn render_install_sh(public_url: &str, ca_sha256: &str) -> String {
    INSTALL_SH
        .replace("@KILN_SERVER@", public_url)
        .replace("@KILN_CA_SHA256@", ca_sha256)
}

#[utoipa::path(get, path = "/install.sh", tag = "artifacts", responses((status = 200, description = "POSIX shell script")))]
pub async fn install_sh(State(st): State<AppStateRef>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/x-shellscript")],
        render_install_sh(&st.settings.public_url, &st.settings.ca_sha256),
    )
}

const INSTALL_SH: &str = r#"#!/bin/sh
# Kiln agent installer for an already running Linux:
#   curl -sfL @KILN_SERVER@/install.sh | KILN_TOKEN=... bash -
# Fetches the server CA, checks it against the pin baked in below, downloads kiln-agent over
# TLS verified by that CA, writes /etc/kiln/agent.json and starts `kiln-agent serve`, which
# registers with the token and writes its machine id and credential back into that file.
# KILN_ROOT=/some/dir installs under that directory instead of / and starts nothing (for
# image builds and tests; root is then not required).
set -eu
KILN_SERVER="@KILN_SERVER@"
KILN_CA_SHA256="@KILN_CA_SHA256@"
root=${KILN_ROOT:-}
if [ -z "${KILN_TOKEN:-}" ]; then
    echo "install.sh: set KILN_TOKEN to a bootstrap token (kilnctl token create)" >&2
    exit 1
fi
case "$KILN_TOKEN" in
    *[!A-Za-z0-9._-]*)
        echo "install.sh: KILN_TOKEN is not a bootstrap token (expected base64url and dots)" >&2
        exit 1 ;;
esac
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The CA is fetched without verification, then accepted only if it is one certificate whose
# SHA-256 matches the pin; curl and the agent then trust a file rebuilt from exactly those
# bytes (never a second block, a TRUSTED CERTIFICATE one included, that came along).
curl -sfk "$KILN_SERVER/ca.pem" -o "$tmp/served.pem"
if [ "$(grep -c -e '-----BEGIN' "$tmp/served.pem")" != 1 ]; then
    echo "install.sh: $KILN_SERVER/ca.pem must hold exactly one certificate; refusing" >&2
    exit 1
fi
b64=$(sed -e '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/!d' -e '/-----/d' "$tmp/served.pem")
got=$(printf '%s\n' "$b64" | base64 -d | sha256sum | cut -d' ' -f1)
if [ "$got" != "$KILN_CA_SHA256" ]; then
    echo "install.sh: the server CA has SHA-256 $got, expected $KILN_CA_SHA256; refusing" >&2
    exit 1
fi
{ echo '-----BEGIN CERTIFICATE-----'; printf '%s\n' "$b64"; echo '-----END CERTIFICATE-----'; } > "$tmp/ca.pem"
curl -sf --cacert "$tmp/ca.pem" "$KILN_SERVER/artifacts/kiln-agent" -o "$tmp/kiln-agent"
install -d -m 0700 "$root/etc/kiln"
install -d "$root/usr/local/sbin"
install -m 0755 "$tmp/kiln-agent" "$root/usr/local/sbin/kiln-agent"
install -m 0644 "$tmp/ca.pem" "$root/etc/kiln/ca.pem"
umask 077
# The agent's config (docs/protocol.md, "Agent config"); the same file the installer
# injects into systems it provisions.
cat > "$root/etc/kiln/agent.json" <<KILN_CONFIG
{"url": "$KILN_SERVER", "ca_pin": "$KILN_CA_SHA256", "token": "$KILN_TOKEN"}
KILN_CONFIG
if [ -n "$root" ]; then
    echo "kiln-agent installed under $root (not started)"
elif command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    cat > /etc/systemd/system/kiln-agent.service <<'KILN_UNIT'
[Unit]
Description=Kiln agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/sbin/kiln-agent serve
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
KILN_UNIT
    systemctl daemon-reload
    systemctl enable --now kiln-agent.service
    echo "kiln-agent installed and started (systemctl status kiln-agent)"
else
    nohup /usr/local/sbin/kiln-agent serve >/var/log/kiln-agent.log 2>&1 &
    echo "kiln-agent installed and started (log: /var/log/kiln-agent.log)"
fi
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sh_is_filled_and_parses() {
        let text = render_install_sh("https://kiln.example:8443", &"ab".repeat(32));
        assert!(!text.contains("@KILN_"));
        assert!(text.contains("KILN_SERVER=\"https://kiln.example:8443\""));
        assert!(text.contains("/etc/kiln/agent.json") && !text.contains("agent.env"));
        assert!(text.contains("ExecStart=/usr/local/sbin/kiln-agent serve"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.sh");
        std::fs::write(&path, &text).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "install.sh has a syntax error");
    }

    #[test]
    fn install_sh_writes_the_agent_config_as_json() {
        // The agent reads /etc/kiln/agent.json (kiln-agent's control::config::Config::from_file):
        // url, ca_pin and token, as the shell expands them.
        let pin = "ab".repeat(32);
        let text = render_install_sh("https://kiln.example:8443", &pin);
        let line = text
            .lines()
            .find(|l| l.starts_with("{\"url\""))
            .expect("the config line");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "KILN_SERVER=https://kiln.example:8443 KILN_CA_SHA256={pin} KILN_TOKEN=eyJ.a-b_c\n\
                 cat <<KILN_CONFIG\n{line}\nKILN_CONFIG\n"
            ))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["url"], "https://kiln.example:8443");
        assert_eq!(v["ca_pin"], pin);
        assert_eq!(v["token"], "eyJ.a-b_c");
    }

    #[test]
    fn install_sh_pin_check_matches_server_pin() {
        // The shell pipeline must compute the same pin as the server for a real CA.
        let dir = tempfile::tempdir().unwrap();
        let files = crate::tls::ensure_generated(dir.path(), &["localhost".into()]).unwrap();
        let tls = crate::tls::load(&files).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sed -e '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/!d' -e '/-----/d' {} \
                 | base64 -d | sha256sum | cut -d' ' -f1",
                files.ca_cert.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), tls.ca_sha256);
    }

    /// A man in the middle serves the real CA plus its own as a TRUSTED CERTIFICATE block
    /// (which `curl --cacert` honours while the pin check only hashed the first): install.sh
    /// must refuse, install nothing and never fetch the agent.
    #[test]
    fn install_sh_refuses_a_ca_pem_with_an_extra_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            crate::tls::ensure_generated(&dir.path().join("tls"), &["localhost".into()]).unwrap();
        let tls = crate::tls::load(&files).unwrap();
        let evil =
            crate::tls::ensure_generated(&dir.path().join("evil"), &["localhost".into()]).unwrap();
        let evil_pem = std::fs::read_to_string(&evil.ca_cert).unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir_all(www.join("artifacts")).unwrap();
        std::fs::write(www.join("artifacts/kiln-agent"), "#!/bin/sh\n").unwrap();
        let tampered = format!(
            "{}{}",
            tls.ca_pem,
            evil_pem
                .replace("BEGIN CERTIFICATE", "BEGIN TRUSTED CERTIFICATE")
                .replace("END CERTIFICATE", "END TRUSTED CERTIFICATE")
        );
        std::fs::write(www.join("ca.pem"), tampered).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut server = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(&www)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let script = dir.path().join("install.sh");
        std::fs::write(&script, render_install_sh(&url, &tls.ca_sha256)).unwrap();
        let prefix = dir.path().join("root");
        let out = std::process::Command::new("sh")
            .arg(&script)
            .env("KILN_TOKEN", "eyJ.abc")
            .env("KILN_ROOT", &prefix)
            .output()
            .unwrap();
        let _ = server.kill();
        let _ = server.wait();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "install.sh accepted a tampered ca.pem: {stderr}"
        );
        assert!(stderr.contains("exactly one certificate"), "{stderr}");
        assert!(
            !prefix.join("etc/kiln/ca.pem").exists(),
            "something was installed"
        );
    }
}
