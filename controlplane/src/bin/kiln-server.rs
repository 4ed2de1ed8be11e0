//! `kiln-server`: the Kiln control plane.

use anyhow::{Context, Result};
use clap::Parser;
use kiln_controlplane::ratelimit::RateLimits;
use kiln_controlplane::server::{self, ServerConfig};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// The Kiln control plane: API, agent protocol and installer artifacts over HTTPS.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KILN_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Data directory: SQLite database, master key, generated TLS material.
    #[arg(long, env = "KILN_DATA_DIR", default_value = "/var/lib/kiln")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:pass@host/db). SQLite in the data directory if unset.
    #[arg(long, env = "KILN_DATABASE_URL")]
    database_url: Option<String>,
    /// URL agents reach this server at (default https://<first --tls-name>:<port>).
    #[arg(long, env = "KILN_PUBLIC_URL")]
    public_url: Option<String>,
    /// DNS name or IP for the generated certificate (repeatable), added to localhost and
    /// 127.0.0.1; the first one names the default public URL. A change issues the server
    /// certificate again under the same CA (the pin stays).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Operator-provided certificate chain (PEM); needs --tls-key and --tls-ca.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA certificate agents pin (PEM).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Directory with vmlinuz, kiln-agent and kiln.iso (built into out/ by scripts/build-*).
    #[arg(long, env = "KILN_ARTIFACTS_DIR", default_value = "out")]
    artifacts_dir: PathBuf,
    /// Official image catalog (JSON: {"images": [{"name", "description", "oci_url", ...}]}).
    #[arg(long, env = "KILN_CATALOG")]
    catalog: Option<PathBuf>,
    /// Name of the account created on first start.
    #[arg(long, default_value = "admin")]
    admin_account: String,
    /// Agent heartbeat interval in seconds (offline after three missed).
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Turn off the per-client-IP rate limits of registration without a token, claim and
    /// approval (e.g. a lab where hundreds of machines share one NAT address).
    #[arg(long)]
    no_rate_limits: bool,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

/// Where a kilnctl on this host reaches the listener: 127.0.0.1 (or ::1) for a wildcard
/// address, else the address itself.
fn local_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// The operator's TLS names first (the first names the default public URL), then
/// localhost and 127.0.0.1 unless given.
fn with_default_names(mut names: Vec<String>) -> Vec<String> {
    for d in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == d) {
            names.push(d.to_string());
        }
    }
    names
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let cfg = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        public_url: args.public_url,
        tls_names: with_default_names(args.tls_names),
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_ca: args.tls_ca,
        artifacts_dir: args.artifacts_dir,
        catalog: args.catalog,
        admin_account: args.admin_account,
        heartbeat_secs: args.heartbeat_secs,
        approval_code_secs: 15 * 60,
        rate_limits: if args.no_rate_limits {
            RateLimits::OFF
        } else {
            RateLimits::default()
        },
    };
    let prepared = server::prepare(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    // Printed on stdout, never logged: the operator copies these once.
    println!(
        "Kiln control plane at {}",
        prepared.state.settings.public_url
    );
    println!("CA sha256 pin: {}", prepared.tls.ca_sha256);
    if let Some(key) = &prepared.admin_key {
        println!("Admin API key (shown only this once, store it now): {key}");
    }
    println!(
        "kilnctl on this host: export KILN_SERVER=https://{} KILN_CA_SHA256={} KILN_API_KEY=<the admin key>",
        local_address(cfg.listen),
        prepared.tls.ca_sha256
    );
    tracing::info!(listen = %cfg.listen, ca_sha256 = %prepared.tls.ca_sha256, backend = ?prepared.state.db.backend, "serving");
    let router = kiln_controlplane::api::router(prepared.state.clone());
    server::serve(
        listener,
        prepared.tls.config.clone(),
        router,
        prepared.shutdown,
        server::shutdown_signal(),
    )
    .await
}
