//! `kiln-bench`: load benchmark of the control plane (not a test). Starts one server over
//! TLS on 127.0.0.1 (SQLite in a temp dir unless --database-url), then N simulated agents
//! register with one bootstrap token, long-poll for orders, receive a provisioning order
//! and stream batched progress events. Prints p50/p99/max latency and errors per operation,
//! with GET /healthz under the same concurrency as the baseline.

use anyhow::{Context, Result};
use clap::Parser;
use kiln_controlplane::client::{Client, Trust};
use kiln_controlplane::server::{self, ServerConfig};
use kiln_protocol::{EventAck, OrdersResponse, RegisterResponse, RunEvent, SequencedEvent, Step};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::Barrier;

#[derive(Parser, Debug)]
#[command(about = "Load benchmark: simulated agents against one kiln-server")]
struct Args {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Progress events per batch.
    #[arg(long, default_value_t = 5)]
    batch: usize,
    /// PostgreSQL URL instead of SQLite in a temp dir.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Default)]
struct Stats {
    lat: Mutex<BTreeMap<&'static str, Vec<f64>>>,
    errors: Mutex<BTreeMap<&'static str, (u64, String)>>,
}

impl Stats {
    /// Prints the latency table and the errors per operation.
    fn report(&self) {
        let lat = self.lat.lock().unwrap();
        let errors = self.errors.lock().unwrap();
        let base_p50 = lat.get("healthz (baseline)").map(|v| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            pct(&v, 0.5)
        });
        println!(
            "{:<24} {:>7} {:>9} {:>9} {:>9} {:>8} {:>12}",
            "operation", "count", "p50 ms", "p99 ms", "max ms", "errors", "p50/healthz"
        );
        let mut ops: Vec<&&str> = lat.keys().chain(errors.keys()).collect();
        ops.sort();
        ops.dedup();
        for op in ops {
            let mut v = lat.get(*op).cloned().unwrap_or_default();
            v.sort_by(f64::total_cmp);
            let errs = errors.get(*op).map(|e| e.0).unwrap_or(0);
            let ratio = base_p50.map(|b| pct(&v, 0.5) / b).unwrap_or(f64::NAN);
            println!(
                "{:<24} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>11.1}x",
                op,
                v.len(),
                pct(&v, 0.5),
                pct(&v, 0.99),
                v.last().copied().unwrap_or(f64::NAN),
                errs,
                ratio
            );
        }
        for (op, (n, first)) in errors.iter() {
            println!("errors in {op}: {n}, first: {first}");
        }
    }

    fn ok(&self, op: &'static str, d: Duration) {
        self.lat
            .lock()
            .unwrap()
            .entry(op)
            .or_default()
            .push(d.as_secs_f64() * 1000.0);
    }
    fn err(&self, op: &'static str, e: &anyhow::Error) {
        let mut m = self.errors.lock().unwrap();
        let entry = m.entry(op).or_insert((0, format!("{e:#}")));
        entry.0 += 1;
    }
    async fn time<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Option<T> {
        let start = Instant::now();
        match f.await {
            Ok(v) => {
                self.ok(op, start.elapsed());
                Some(v)
            }
            Err(e) => {
                self.err(op, &e);
                None
            }
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn event_plan() -> Vec<RunEvent> {
    let mut out = Vec::new();
    for (i, step) in Step::ALL.into_iter().enumerate() {
        out.push(RunEvent::StepStarted { step });
        for k in 1..=3u8 {
            let percent = ((i as u8 * 3 + k) as f64 / 21.0 * 100.0) as u8;
            out.push(RunEvent::Progress { step, percent });
        }
        out.push(RunEvent::StepCompleted { step });
    }
    out.push(RunEvent::Completed);
    out
}

// One simulated agent; the shared handles are passed one by one for readability.
#[allow(clippy::too_many_arguments)]
async fn agent(
    n: usize,
    base: Client,
    token: String,
    stats: Arc<Stats>,
    registered: Arc<Barrier>,
    machines: Arc<Mutex<Vec<String>>>,
    triggered: Arc<Mutex<HashMap<String, Instant>>>,
    batch: usize,
) -> Result<()> {
    // The first request pays the TLS handshake; the second is the baseline.
    stats
        .time("healthz + TLS handshake", async {
            base.text("/healthz").await.map(|_| ())
        })
        .await;
    stats
        .time("healthz (baseline)", async {
            base.text("/healthz").await.map(|_| ())
        })
        .await;
    let reg = stats
        .time("register", async {
            base.call_as::<RegisterResponse>(
                Method::POST,
                "/api/agent/v1/register",
                Some(&json!({"token": token, "inventory": {
                    "hostname": format!("bench-{n}"), "arch": "x86_64", "cpu_cores": 8,
                    "memory_bytes": 34359738368u64, "system_uuid": format!("bench-{n}"),
                    "disks": [{"name": "nvme0n1", "size_bytes": 1000204886016u64, "rotational": false}],
                    "nics": [{"name": "eth0", "mac": format!("02:00:00:00:{:02x}:{:02x}", n / 256, n % 256)}]}})),
            )
            .await
        })
        .await;
    let (c, machine) = match reg {
        Some(RegisterResponse::Approved {
            machine_uuid,
            credential,
        }) => {
            machines.lock().unwrap().push(machine_uuid.to_string());
            (base.with_bearer(credential), machine_uuid.to_string())
        }
        _ => {
            registered.wait().await;
            anyhow::bail!("agent {n} did not register");
        }
    };
    let first = stats
        .time(
            "orders (no wait)",
            c.call_as::<OrdersResponse>(Method::GET, "/api/agent/v1/orders", None::<&()>),
        )
        .await
        .context("first orders")?;
    registered.wait().await;
    // Long-poll until the provisioning order arrives (the driver triggers after the barrier).
    let mut version = first.version;
    let order = loop {
        let o = stats
            .time(
                "orders long-poll",
                c.call_as::<OrdersResponse>(
                    Method::GET,
                    &format!("/api/agent/v1/orders?after={version}&wait=30"),
                    None::<&()>,
                ),
            )
            .await
            .context("long-poll")?;
        version = o.version;
        if let Some(kiln_protocol::Order::Provision(p)) = o.order {
            // Time from the provision call starting to the order reaching the agent.
            if let Some(at) = triggered.lock().unwrap().get(&machine) {
                stats.ok("order delivery", at.elapsed());
            }
            break p;
        }
    };
    stream_events(&c, &stats, &order.run_id.to_string(), batch).await;
    stats
        .time("heartbeat", async {
            c.call(
                Method::POST,
                "/api/agent/v1/heartbeat",
                Some(&json!({"environment": "installed"})),
            )
            .await
            .map(|_| ())
        })
        .await;
    Ok(())
}

/// Sends the run's events in batches of `batch`, retrying a failed batch once.
async fn stream_events(c: &Client, stats: &Stats, run_id: &str, batch: usize) {
    let plan = event_plan();
    let mut seq = 0u64;
    for chunk in plan.chunks(batch) {
        let events: Vec<SequencedEvent> = chunk
            .iter()
            .map(|e| {
                seq += 1;
                SequencedEvent {
                    seq,
                    at: OffsetDateTime::now_utc(),
                    event: e.clone(),
                }
            })
            .collect();
        let path = format!("/api/agent/v1/runs/{run_id}/events");
        let ack = stats
            .time(
                "events batch",
                c.call_as::<EventAck>(Method::POST, &path, Some(&json!({"events": events}))),
            )
            .await;
        if ack.is_none() {
            // Retry once: the endpoint is idempotent.
            stats
                .time(
                    "events batch",
                    c.call_as::<EventAck>(Method::POST, &path, Some(&json!({"events": events}))),
                )
                .await;
        }
    }
}

/// Triggers provisioning of every machine, 16 at a time; returns how long it took.
async fn trigger_all(
    admin: &Client,
    ids: Vec<String>,
    stats: &Arc<Stats>,
    triggered: &Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<Duration> {
    let trigger_start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut triggers = Vec::new();
    for id in ids {
        let admin = admin.clone();
        let stats = stats.clone();
        let permit = sem.clone().acquire_owned().await?;
        let triggered = triggered.clone();
        triggers.push(tokio::spawn(async move {
            triggered.lock().unwrap().insert(id.clone(), Instant::now());
            stats
                .time("provision (admin API)", async {
                    admin
                        .call(
                            Method::POST,
                            &format!("/api/machines/{id}/provision"),
                            Some(&json!({})),
                        )
                        .await
                        .map(|_| ())
                })
                .await;
            drop(permit);
        }));
    }
    for t in triggers {
        t.await?;
    }
    Ok(trigger_start.elapsed())
}

/// A running server with an admin client and a bootstrap token for the agents.
struct Server {
    _dir: tempfile::TempDir,
    url: String,
    trust: Trust,
    admin: Client,
    token: String,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<()>>,
}

/// Starts kiln-server on 127.0.0.1 (data in a temp dir) with one catalog image as the
/// account default, and makes a bootstrap token.
async fn start_server(args: &Args) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut cfg = ServerConfig::for_data_dir(dir.path().join("data"));
    cfg.database_url = args.database_url.clone();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"images": [{"name": "ubuntu", "oci_url": "ghcr.io/kiln/ubuntu:24.04"}]}"#,
    )?;
    cfg.catalog = Some(catalog);
    let prepared = server::prepare(&cfg).await?;
    let admin_key = prepared
        .admin_key
        .clone()
        .context("fresh server has an admin key")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = kiln_controlplane::api::router(prepared.state.clone());
    let server = tokio::spawn(server::serve(
        listener,
        prepared.tls.config.clone(),
        router,
        prepared.shutdown,
        async {
            let _ = stop_rx.await;
        },
    ));
    let url = format!("https://127.0.0.1:{}", addr.port());
    let trust = Trust::CaPem(prepared.tls.ca_pem.clone());
    let admin = Client::new(&url, trust.clone(), Some(admin_key)).await?;
    admin
        .call(
            Method::PUT,
            "/api/account/settings",
            Some(&json!({"default_image": "ubuntu"})),
        )
        .await?;
    let token = admin
        .call(
            Method::POST,
            "/api/bootstrap-tokens",
            Some(&json!({"lifetime": "1d"})),
        )
        .await?["token"]
        .as_str()
        .context("token")?
        .to_string();

    Ok(Server {
        _dir: dir,
        url,
        trust,
        admin,
        token,
        stop_tx,
        server,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Server {
        _dir,
        url,
        trust,
        admin,
        token,
        stop_tx,
        server,
    } = start_server(&args).await?;
    println!(
        "kiln-bench: {} agents, {} events per batch, {} on {url}",
        args.agents,
        args.batch,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let stats = Arc::new(Stats::default());
    let registered = Arc::new(Barrier::new(args.agents + 1));
    let machines = Arc::new(Mutex::new(Vec::new()));
    let triggered = Arc::new(Mutex::new(HashMap::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..args.agents {
        // One client (own connection pool) per agent, as real agents have.
        let c = Client::new(&url, trust.clone(), None).await?;
        tasks.push(tokio::spawn(agent(
            n,
            c,
            token.clone(),
            stats.clone(),
            registered.clone(),
            machines.clone(),
            triggered.clone(),
            args.batch,
        )));
    }
    registered.wait().await;
    let registered_at = start.elapsed();
    let ids: Vec<String> = machines.lock().unwrap().clone();
    let triggered_in = trigger_all(&admin, ids, &stats, &triggered).await?;
    let mut agent_errors = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            agent_errors += 1;
            if agent_errors <= 3 {
                eprintln!("agent error: {e:#}");
            }
        }
    }
    let total = start.elapsed();
    let runs = admin.text("/metrics").await?;
    let completed = runs
        .lines()
        .find(|l| l.starts_with("kiln_runs{status=\"completed\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("0")
        .to_string();
    let _ = stop_tx.send(());
    server.await??;

    stats.report();
    println!(
        "registered {} agents in {:.2}s; triggered {} runs in {:.2}s; completed runs: {completed}; \
         failed agents: {agent_errors}; total {:.2}s",
        args.agents,
        registered_at.as_secs_f64(),
        args.agents,
        triggered_in.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "note: 'orders long-poll' includes waiting for the order by design; 'order delivery' is \
         from the start of the provision call to the order reaching the agent"
    );
    Ok(())
}
