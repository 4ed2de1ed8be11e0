//! The real TLS listener: CA pinning by the client, and graceful shutdown answering a
//! long-poll in flight at once.

use kiln_controlplane::client::{Client, Trust};
use kiln_controlplane::server::{self, ServerConfig};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pin_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::for_data_dir(dir.path().join("data"));
    let prepared = server::prepare(&cfg).await.unwrap();
    let admin = prepared.admin_key.clone().unwrap();
    let pin = prepared.tls.ca_sha256.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = kiln_controlplane::api::router(prepared.state.clone());
    let srv = tokio::spawn(server::serve(
        listener,
        prepared.tls.config.clone(),
        router,
        prepared.shutdown,
        async {
            let _ = stop_rx.await;
        },
    ));

    // A wrong pin is refused before any API call; the right one works.
    let err = Client::new(&url, Trust::Pin("00".repeat(32)), None)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("refusing"), "{err:#}");
    let c = Client::new(&url, Trust::Pin(pin.clone()), Some(admin))
        .await
        .unwrap();
    assert_eq!(c.text("/healthz").await.unwrap(), "ok\n");
    assert_eq!(c.get("/api/info").await.unwrap()["ca_sha256"], pin.as_str());
    // A second restart keeps the CA (agents keep their pin).
    assert_eq!(server::prepare(&cfg).await.unwrap().tls.ca_sha256, pin);

    // An agent long-polling for 60 s is answered as soon as the server shuts down.
    expect_ok(
        c.call(
            Method::PUT,
            "/api/account/settings",
            Some(&json!({"default_image": null})),
        )
        .await,
    );
    let token = c
        .call(Method::POST, "/api/bootstrap-tokens", Some(&json!({})))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let reg = c
        .call(
            Method::POST,
            "/api/agent/v1/register",
            Some(&json!({"token": token, "inventory": {"arch": "x86_64", "cpu_cores": 1, "memory_bytes": 1}})),
        )
        .await
        .unwrap();
    let agent = c.with_bearer(reg["credential"].as_str().unwrap().to_string());
    let v = agent.get("/api/agent/v1/orders").await.unwrap()["version"]
        .as_u64()
        .unwrap();
    let poll = tokio::spawn(async move {
        let start = Instant::now();
        let r = agent
            .get(&format!("/api/agent/v1/orders?after={v}&wait=60"))
            .await;
        (start.elapsed(), r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop_at = Instant::now();
    stop_tx.send(()).unwrap();
    let (waited, r) = poll.await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(
        waited < Duration::from_secs(10),
        "long-poll held shutdown for {waited:?}"
    );
    srv.await.unwrap().unwrap();
    assert!(stop_at.elapsed() < Duration::from_secs(10));
}

fn expect_ok(r: anyhow::Result<serde_json::Value>) {
    if let Err(e) = r {
        panic!("{e:#}");
    }
}
