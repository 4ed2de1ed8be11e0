//! Server start-up (data directory, database, keys, TLS, catalog, admin bootstrap) and the
//! TLS accept loop with graceful shutdown.

use crate::api::{self, AppState, AppStateRef, Settings};
use crate::db::Db;
use crate::secrets::MasterKey;
use crate::tls::{self, TlsFiles, TlsMaterial};
use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Everything `kiln-server` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://...`; SQLite in `data_dir` when `None`.
    pub database_url: Option<String>,
    /// URL agents use; default `https://<first TLS name>:<port>`.
    pub public_url: Option<String>,
    /// DNS names / IPs of the generated server certificate.
    pub tls_names: Vec<String>,
    /// Operator-provided certificate chain, key and CA (all three or none).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub artifacts_dir: PathBuf,
    /// Official image catalog file (JSON), synced at start.
    pub catalog: Option<PathBuf>,
    /// Name of the account created on first start.
    pub admin_account: String,
    pub heartbeat_secs: u64,
    pub approval_code_secs: i64,
    pub rate_limits: crate::ratelimit::RateLimits,
}

impl ServerConfig {
    /// Defaults for a data directory (used by tests and the benchmark).
    pub fn for_data_dir(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("static address"),
            artifacts_dir: data_dir.join("artifacts"),
            data_dir,
            database_url: None,
            public_url: None,
            tls_names: vec!["localhost".into(), "127.0.0.1".into()],
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            catalog: None,
            admin_account: "admin".into(),
            heartbeat_secs: 30,
            approval_code_secs: 15 * 60,
            rate_limits: Default::default(),
        }
    }
}

/// A prepared server: state ready, not yet listening.
pub struct Prepared {
    pub state: AppStateRef,
    pub tls: TlsMaterial,
    /// The admin API key, when this start created it (print it once).
    pub admin_key: Option<String>,
    pub shutdown: watch::Sender<bool>,
}

/// Opens the data directory, database, keys and TLS material; syncs the catalog and creates
/// the admin account on first start.
pub async fn prepare(cfg: &ServerConfig) -> Result<Prepared> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let db = Db::connect(cfg.database_url.as_deref(), &cfg.data_dir).await?;
    let master = MasterKey::load_or_create(&cfg.data_dir)?;
    let files = match (&cfg.tls_cert, &cfg.tls_key, &cfg.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => TlsFiles {
            server_cert: cert.clone(),
            server_key: key.clone(),
            ca_cert: ca.clone(),
        },
        (None, None, None) => tls::ensure_generated(&cfg.data_dir.join("tls"), &cfg.tls_names)?,
        _ => anyhow::bail!(
            "give all of --tls-cert, --tls-key and --tls-ca (the CA agents pin), or none to \
             generate them"
        ),
    };
    let tls = tls::load(&files)?;
    let public_url = cfg.public_url.clone().unwrap_or_else(|| {
        let host = cfg
            .tls_names
            .first()
            .map(String::as_str)
            .unwrap_or("localhost");
        format!("https://{host}:{}", cfg.listen.port())
    });
    let (tx, rx) = watch::channel(false);
    let settings = Settings {
        public_url,
        ca_sha256: tls.ca_sha256.clone(),
        ca_pem: tls.ca_pem.clone(),
        artifacts_dir: cfg.artifacts_dir.clone(),
        heartbeat_secs: cfg.heartbeat_secs,
        approval_code_secs: cfg.approval_code_secs,
        rate_limits: cfg.rate_limits,
    };
    let state = Arc::new(AppState::new(db, master, settings, rx));
    state.tokens.ensure_key(&state.db).await?;
    if let Some(path) = &cfg.catalog {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading image catalog {}", path.display()))?;
        let (n, deleted) = api::catalog::sync_catalog(&state.db, &text)
            .await
            .with_context(|| format!("syncing image catalog {}", path.display()))?;
        tracing::info!(images = n, deleted, catalog = %path.display(), "official images synced");
    }
    let admin_key = api::accounts::bootstrap_admin(&state.db, &cfg.admin_account).await?;
    tokio::spawn(sweep_loop(state.clone()));
    Ok(Prepared {
        state,
        tls,
        admin_key,
        shutdown: tx,
    })
}

/// Deletes expired pending machines every 10 minutes until shutdown.
async fn sweep_loop(state: AppStateRef) {
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = api::agent::sweep_pending(&state, crate::db::now_ms()).await {
            tracing::warn!(error = %e.message, "sweeping expired pending machines");
        }
    }
}

/// Serves `router` over TLS on `listener` until `signal` resolves, then stops accepting,
/// wakes long-polls and waits up to 10 s for requests in flight.
pub async fn serve(
    listener: TcpListener,
    tls_config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: watch::Sender<bool>,
    signal: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let graceful = GracefulShutdown::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // Handlers see the peer address (per-IP rate limits) as axum's ConnectInfo.
                    let router = router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                        req
                    });
                    let service = TowerToHyperService::new(router);
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut signal => break,
        }
    }
    tracing::info!("shutting down: no new connections, waking long-polls");
    let _ = shutdown.send(true);
    drop(listener);
    match tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("connections still open after 10 s; exiting anyway"),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
