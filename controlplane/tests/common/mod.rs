//! Test harness: an in-process server (router + state) on SQLite in a temp dir or on a
//! PostgreSQL 15 cluster the test starts itself, and a global log capture.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use kiln_controlplane::api::{self, AppStateRef};
use kiln_controlplane::server::{self, ServerConfig};
use serde_json::Value;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

/// Every log line of the test process (all levels of kiln, debug of the rest).
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,kiln_controlplane=trace",
            ))
            .with_writer(move || LogWriter(writer.clone()))
            .with_ansi(false)
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// A server under test.
pub struct Harness {
    pub router: Router,
    pub state: AppStateRef,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub cfg: ServerConfig,
    /// Every response body seen, to prove secrets never appear in one.
    pub bodies: Mutex<Vec<String>>,
}

pub struct Resp {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
    pub headers: axum::http::HeaderMap,
}

impl Harness {
    pub async fn new(database_url: Option<String>) -> Harness {
        Self::with_config(database_url, |_| {}).await
    }

    /// A server whose configuration `tweak` adjusts first (e.g. lower rate limits).
    pub async fn with_config(
        database_url: Option<String>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Harness {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::for_data_dir(dir.path().join("data"));
        cfg.database_url = database_url;
        tweak(&mut cfg);
        let catalog = write_catalog(dir.path());
        cfg.catalog = Some(catalog);
        let prepared = server::prepare(&cfg).await.unwrap();
        let admin = prepared
            .admin_key
            .clone()
            .expect("first start creates the admin key");
        // Keep the shutdown sender alive for the state's lifetime.
        std::mem::forget(prepared.shutdown);
        Harness {
            router: api::router(prepared.state.clone()),
            state: prepared.state,
            admin,
            dir,
            cfg,
            bodies: Mutex::new(Vec::new()),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.call_from("127.0.0.1", method, path, key, body).await
    }

    /// [`Harness::call`] from a client at `ip` (as the TLS listener reports the TCP peer).
    pub async fn call_from(
        &self,
        ip: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let peer = std::net::SocketAddr::new(ip.parse().unwrap(), 40000);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .extension(axum::extract::ConnectInfo(peer));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.bodies.lock().unwrap().push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            json,
            text,
            headers,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }
    pub async fn put(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(key), Some(body)).await
    }
    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Runs SQL against the server's database (to move clocks: expire codes, age heartbeats).
    pub async fn sql(&self, q: &str, binds: &[&str]) {
        let mut query = sqlx::query(q);
        for b in binds {
            query = query.bind(b.to_string());
        }
        query.execute(&self.state.db.pool).await.unwrap();
    }

    pub fn all_bodies(&self) -> String {
        self.bodies.lock().unwrap().join("\n")
    }
}

/// The official image catalog every test server syncs.
pub fn write_catalog(dir: &Path) -> PathBuf {
    let catalog = dir.join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"images": [
            {"name": "ubuntu-24.04", "description": "Ubuntu", "oci_url": "ghcr.io/kiln/ubuntu:24.04"},
            {"name": "debian-12", "oci_url": "ghcr.io/kiln/debian:12",
             "raw_disk_url": "https://images.example/debian.raw",
             "raw_checksum": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
        ]}"#,
    )
    .unwrap();
    catalog
}

/// A real server on the TLS listener at https://127.0.0.1:<port> (its public URL), for
/// kilnctl and install.sh; stopped on drop.
pub struct Live {
    pub url: String,
    pub pin: String,
    pub admin: String,
    pub state: AppStateRef,
    pub cfg: ServerConfig,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Live {
    pub async fn start() -> Live {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = ServerConfig::for_data_dir(dir.path().join("data"));
        cfg.listen = addr;
        cfg.public_url = Some(format!("https://127.0.0.1:{}", addr.port()));
        cfg.catalog = Some(write_catalog(dir.path()));
        let prepared = server::prepare(&cfg).await.unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = api::router(prepared.state.clone());
        tokio::spawn(server::serve(
            listener,
            prepared.tls.config.clone(),
            router,
            prepared.shutdown,
            async {
                let _ = stop_rx.await;
            },
        ));
        Live {
            url: prepared.state.settings.public_url.clone(),
            pin: prepared.tls.ca_sha256.clone(),
            admin: prepared.admin_key.clone().unwrap(),
            state: prepared.state,
            cfg,
            dir,
            stop: Some(stop),
        }
    }

    /// An API client trusting the server by its pin.
    pub async fn client(&self, bearer: Option<&str>) -> kiln_controlplane::client::Client {
        kiln_controlplane::client::Client::new(
            &self.url,
            kiln_controlplane::client::Trust::Pin(self.pin.clone()),
            bearer.map(str::to_string),
        )
        .await
        .unwrap()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Asserts a status, printing the body on mismatch.
#[track_caller]
pub fn expect(r: &Resp, status: u16) -> &Value {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text);
    &r.json
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL 15 cluster in a temp dir on 127.0.0.1, run as user postgres; stopped on drop.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    data: PathBuf,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .arg("-u")
        .arg("postgres")
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed (scripts/setup)"
        );
        let dir = tempfile::Builder::new()
            .prefix("kiln-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()
            .unwrap();
        let data_s = data.to_str().unwrap();
        as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data_s,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let port = free_port();
        let log = dir.path().join("pg.log");
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=300",
            dir.path().display()
        );
        as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data_s,
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "start",
        ]);
        Postgres { dir, port, data }
    }

    /// Creates a fresh database and returns its URL.
    pub async fn database(&self, name: &str) -> String {
        sqlx::any::install_default_drivers();
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A run event as the agent sends it, with sequence number `seq`.
pub fn ev(seq: u64, event: Value) -> Value {
    serde_json::json!({"seq": seq, "at": "2026-01-01T00:00:00Z", "event": event})
}

/// Posts run events as the agent holding `agent`'s credential.
pub async fn post_events(agent: &kiln_controlplane::client::Client, run: &str, events: Vec<Value>) {
    agent
        .call(
            reqwest::Method::POST,
            &format!("/api/agent/v1/runs/{run}/events"),
            Some(&serde_json::json!({"events": events})),
        )
        .await
        .unwrap();
}
