//! Installer artifacts: files built by `scripts/build-*` into `out/`, served from the
//! configured artifacts directory, plus `install.sh` generated with this server's URL and CA
//! pin.

use super::{ApiError, ApiResult, AppStateRef};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The artifacts Kiln serves and the script that builds each.
pub const ARTIFACTS: [(&str, &str, &str); 3] = [
    (
        "vmlinuz",
        "application/octet-stream",
        "scripts/build-kernel",
    ),
    (
        "kiln-agent",
        "application/octet-stream",
        "scripts/build-agent",
    ),
    (
        "kiln.iso",
        "application/x-iso9660-image",
        "scripts/build-iso",
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
            build_hint: meta.is_none().then(|| {
                format!(
                    "run {script}, then copy out/{name} into {}",
                    st.settings.artifacts_dir.display()
                )
            }),
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
    let path = st.settings.artifacts_dir.join(&name);
    let Ok(f) = tokio::fs::File::open(&path).await else {
        return Err(ApiError::not_found(format!(
            "artifact {name} is not built on this server: run {script}, then copy out/{name} into {}",
            st.settings.artifacts_dir.display()
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
set -eu
KILN_SERVER="@KILN_SERVER@"
KILN_CA_SHA256="@KILN_CA_SHA256@"
if [ -z "${KILN_TOKEN:-}" ]; then
    echo "install.sh: set KILN_TOKEN to a bootstrap token (kilnctl token create)" >&2
    exit 1
fi
case "$KILN_TOKEN" in
    *[!A-Za-z0-9._-]*)
        echo "install.sh: KILN_TOKEN is not a bootstrap token (expected base64url and dots)" >&2
        exit 1 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The CA is fetched without verification, then accepted only if its SHA-256 matches the pin.
curl -sfk "$KILN_SERVER/ca.pem" -o "$tmp/ca.pem"
got=$(sed -e '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/!d' -e '/-----/d' "$tmp/ca.pem" \
      | base64 -d | sha256sum | cut -d' ' -f1)
if [ "$got" != "$KILN_CA_SHA256" ]; then
    echo "install.sh: the server CA has SHA-256 $got, expected $KILN_CA_SHA256; refusing" >&2
    exit 1
fi
curl -sf --cacert "$tmp/ca.pem" "$KILN_SERVER/artifacts/kiln-agent" -o "$tmp/kiln-agent"
install -d -m 0700 /etc/kiln
install -m 0755 "$tmp/kiln-agent" /usr/local/sbin/kiln-agent
install -m 0644 "$tmp/ca.pem" /etc/kiln/ca.pem
umask 077
# The agent's config (docs/protocol.md, "Agent config"); the same file the installer
# injects into systems it provisions.
cat > /etc/kiln/agent.json <<KILN_CONFIG
{"url": "$KILN_SERVER", "ca_pin": "$KILN_CA_SHA256", "token": "$KILN_TOKEN"}
KILN_CONFIG
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
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
}
