//! API test suite. Every case runs on SQLite (unit tier, `sqlite_*`) and on PostgreSQL 15
//! (root tier, `root_postgres_api_suite`, which starts its own cluster).

mod common;
#[path = "api/security.rs"]
mod security;
use security::*;

use axum::http::Method;
use common::{Harness, Postgres, expect, log_text};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

fn inventory(system_uuid: &str) -> Value {
    json!({
        "hostname": format!("host-{}", &system_uuid[..4.min(system_uuid.len())]),
        "arch": "x86_64", "firmware": "uefi", "cpu_model": "Test CPU", "cpu_cores": 4,
        "memory_bytes": 8u64 << 30, "system_vendor": "QEMU", "system_product": "Standard PC",
        "system_serial": null, "system_uuid": system_uuid,
        "disks": [{"name": "vda", "size_bytes": 20u64 << 30, "model": null, "serial": null, "rotational": false}],
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "speed_mbps": 1000}]
    })
}

async fn token(h: &Harness, key: &str, body: Value) -> String {
    let r = h.post("/api/bootstrap-tokens", key, body).await;
    expect(&r, 201)["token"].as_str().unwrap().to_string()
}

/// Registers a machine with a token; returns (uuid, credential).
async fn register(h: &Harness, token: &str, system_uuid: &str) -> (String, String) {
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(json!({"token": token, "inventory": inventory(system_uuid)})),
        )
        .await;
    let j = expect(&r, 201);
    assert_eq!(j["status"], "approved");
    (
        j["machine_uuid"].as_str().unwrap().to_string(),
        j["credential"].as_str().unwrap().to_string(),
    )
}

async fn register_err(h: &Harness, token: &str) -> (u16, String) {
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(json!({"token": token, "inventory": inventory("x-1")})),
        )
        .await;
    (
        r.status.as_u16(),
        r.json["error"].as_str().unwrap_or("").to_string(),
    )
}

async fn new_account(h: &Harness, name: &str) -> String {
    let r = h
        .post("/api/accounts", &h.admin, json!({"name": name}))
        .await;
    expect(&r, 201)["api_key"].as_str().unwrap().to_string()
}

async fn image(h: &Harness, key: &str, name: &str) -> String {
    let r = h
        .post(
            "/api/images",
            key,
            json!({"name": name, "oci_url": format!("registry.local/{name}:1")}),
        )
        .await;
    expect(&r, 201)["id"].as_str().unwrap().to_string()
}

async fn role(h: &Harness, key: &str, name: &str, image: Option<&str>, user_data: Option<&str>) {
    let r = h
        .post(
            "/api/roles",
            key,
            json!({"name": name, "image": image, "user_data": user_data}),
        )
        .await;
    expect(&r, 201);
}

// ------------------------------------------------------------------ cases

async fn case_tokens(h: &Harness) {
    let key = new_account(h, "tok").await;
    // Lifetimes: default 10 minutes, then each extended one.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for (lifetime, secs) in [
        (None, 600),
        (Some("1d"), 86_400),
        (Some("7d"), 604_800),
        (Some("30d"), 2_592_000),
        (Some("90d"), 7_776_000),
        (Some("365d"), 31_536_000),
    ] {
        let body = match lifetime {
            Some(l) => json!({"lifetime": l}),
            None => json!({}),
        };
        let r = h.post("/api/bootstrap-tokens", &key, body).await;
        let j = expect(&r, 201);
        let exp = OffsetDateTime::parse(
            j["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        assert!((exp - now - secs).abs() <= 5, "{lifetime:?}: {}", exp - now);
    }
    let r = h
        .post("/api/bootstrap-tokens", &key, json!({"lifetime": "2d"}))
        .await;
    assert!(r.status.is_client_error(), "lifetime 2d must be refused");

    // One token, many machines.
    let t = token(h, &key, json!({})).await;
    let (m1, _) = register(h, &t, "tok-m1").await;
    let (m2, _) = register(h, &t, "tok-m2").await;
    assert_ne!(m1, m2);
    let list = h.get("/api/machines", &key).await;
    assert_eq!(expect(&list, 200).as_array().unwrap().len(), 2);
    assert_eq!(list.json[0]["state"], "approved");

    // Tampering: change one character of the ciphertext.
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    let mut c: Vec<char> = parts[3].chars().collect();
    c[5] = if c[5] == 'A' { 'B' } else { 'A' };
    parts[3] = c.into_iter().collect();
    let (status, err) = register_err(h, &parts.join(".")).await;
    assert_eq!(status, 401);
    assert!(err.contains("altered"), "{err}");
    let (status, err) = register_err(h, "not-a-token").await;
    assert_eq!(status, 401);
    assert!(err.contains("malformed"), "{err}");

    // Expiry: a 10-minute token issued 11 minutes ago.
    let account: String = h.get("/api/account/settings", &key).await.json["account_id"]
        .as_str()
        .unwrap()
        .into();
    let (old, _) = h
        .state
        .tokens
        .issue(
            &h.state.db,
            account.parse().unwrap(),
            kiln_controlplane::tokens::Lifetime::TenMinutes,
            vec![],
            OffsetDateTime::now_utc() - time::Duration::minutes(11),
        )
        .await
        .unwrap();
    let (status, err) = register_err(h, &old).await;
    assert_eq!(status, 401);
    assert!(err.contains("expired"), "{err}");

    // Unknown key id: a well-formed token from a key this server never had.
    let forged = kiln_controlplane::jwe::encrypt(
        kiln_controlplane::jwe::Enc::A256Gcm,
        "tk-forged",
        &[3u8; 32],
        [0; 12],
        format!(r#"{{"v":1,"account":"{account}","iat":0,"exp":9999999999,"roles":[]}}"#)
            .as_bytes(),
    );
    let (status, err) = register_err(h, &forged).await;
    assert_eq!(status, 401);
    assert!(
        err.contains("tk-forged") && err.contains("does not know"),
        "{err}"
    );

    // Rotation: old tokens work until their key is retired.
    let before = token(h, &key, json!({"lifetime": "1d"})).await;
    let keys = h
        .post("/api/admin/token-keys/rotate", &h.admin, json!({}))
        .await;
    let keys = expect(&keys, 201).as_array().unwrap().clone();
    assert!(keys.len() >= 2);
    assert_eq!(keys[0]["current"], true);
    let old_kid = keys[1]["kid"].as_str().unwrap().to_string();
    let after = token(h, &key, json!({"lifetime": "1d"})).await;
    register(h, &before, "rot-1").await;
    register(h, &after, "rot-2").await;
    let r = h
        .post("/api/admin/token-keys/rotate", &key, json!({}))
        .await;
    expect(&r, 403);
    expect(
        &h.delete(&format!("/api/admin/token-keys/{old_kid}"), &h.admin)
            .await,
        204,
    );
    let (status, err) = register_err(h, &before).await;
    assert_eq!(status, 401);
    assert!(err.contains(&old_kid), "{err}");
    register(h, &after, "rot-3").await;
    let current = keys[0]["kid"].as_str().unwrap();
    let r = h
        .delete(&format!("/api/admin/token-keys/{current}"), &h.admin)
        .await;
    assert!(
        expect(&r, 409)["error"]
            .as_str()
            .unwrap()
            .contains("only active key")
    );
}

async fn case_one_image_rule(h: &Harness) {
    let key = new_account(h, "oneimg").await;
    image(h, &key, "img-a").await;
    image(h, &key, "img-b").await;
    role(h, &key, "web", Some("img-a"), None).await;
    role(h, &key, "db", Some("img-b"), None).await;
    role(h, &key, "base", None, None).await;
    let t = token(h, &key, json!({"roles": ["web", "base"]})).await;
    let (m, _) = register(h, &t, "one-1").await;
    let machine = h.get(&format!("/api/machines/{m}"), &key).await;
    assert_eq!(expect(&machine, 200)["roles"], json!(["base", "web"]));

    let r = h
        .put(
            &format!("/api/machines/{m}/roles"),
            &key,
            json!({"roles": ["web", "db"]}),
        )
        .await;
    let err = expect(&r, 409)["error"].as_str().unwrap();
    assert!(err.contains("\"web\"") && err.contains("\"db\""), "{err}");
    // Unchanged after the refusal.
    assert_eq!(
        h.get(&format!("/api/machines/{m}"), &key).await.json["roles"],
        json!(["base", "web"])
    );

    // Giving "base" an image would break the rule for this machine.
    let r = h
        .put(
            "/api/roles/base",
            &key,
            json!({"name": "base", "image": "img-b"}),
        )
        .await;
    let err = expect(&r, 409)["error"].as_str().unwrap();
    assert!(err.contains("\"base\"") && err.contains("\"web\""), "{err}");

    let r = h
        .post(
            "/api/bootstrap-tokens",
            &key,
            json!({"roles": ["db", "web"]}),
        )
        .await;
    let err = expect(&r, 409)["error"].as_str().unwrap();
    assert!(err.contains("\"web\"") && err.contains("\"db\""), "{err}");

    let r = h
        .post(
            "/api/machines/approve",
            &key,
            json!({"code": "ZZZZZZ", "roles": ["nope"]}),
        )
        .await;
    assert!(r.status.is_client_error());
    expect(
        &h.put(
            &format!("/api/machines/{m}/roles"),
            &key,
            json!({"roles": ["db", "base"]}),
        )
        .await,
        200,
    );
}

async fn case_resolution_chain(h: &Harness) {
    let key = new_account(h, "resolve").await;
    image(h, &key, "role-img").await;
    role(
        h,
        &key,
        "plain",
        None,
        Some("#cloud-config\npackages: [vim]\n"),
    )
    .await;
    role(
        h,
        &key,
        "imaged",
        Some("role-img"),
        Some("#cloud-config\npackages: [htop]\n"),
    )
    .await;
    let t = token(h, &key, json!({"roles": ["plain"]})).await;
    let (m, cred) = register(h, &t, "res-1").await;

    // No role image, no default: a clear error.
    let r = h
        .post(&format!("/api/machines/{m}/provision"), &key, json!({}))
        .await;
    let err = expect(&r, 409)["error"].as_str().unwrap();
    assert!(
        err.contains("no image") && err.contains("default image"),
        "{err}"
    );

    // Account default (an official image, by name).
    let r = h
        .put(
            "/api/account/settings",
            &key,
            json!({"default_image": "ubuntu-24.04"}),
        )
        .await;
    assert_eq!(expect(&r, 200)["default_image_name"], "ubuntu-24.04");
    let r = h
        .post(&format!("/api/machines/{m}/provision"), &key, json!({}))
        .await;
    assert_eq!(expect(&r, 201)["image_name"], "ubuntu-24.04");
    let o = h.get("/api/agent/v1/orders", &cred).await;
    let order = &expect(&o, 200)["order"];
    assert_eq!(order["kind"], "provision");
    assert_eq!(order["image"]["oci_url"], "ghcr.io/kiln/ubuntu:24.04");
    assert_eq!(order["user_data"], "#cloud-config\npackages: [vim]\n");

    // A role image wins over the default; cloud-init merged in role-name order.
    let (m2, cred2) = register(
        h,
        &token(h, &key, json!({"roles": ["plain", "imaged"]})).await,
        "res-2",
    )
    .await;
    let r = h
        .post(&format!("/api/machines/{m2}/provision"), &key, json!({}))
        .await;
    assert_eq!(expect(&r, 201)["image_name"], "role-img");
    let o = h.get("/api/agent/v1/orders", &cred2).await;
    let ud = o.json["order"]["user_data"].as_str().unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(ud).unwrap();
    assert_eq!(
        v["packages"],
        serde_yaml::from_str::<serde_yaml::Value>("[htop, vim]").unwrap(),
        "{ud}"
    );
}

async fn case_approval_lockout(h: &Harness) {
    let key = new_account(h, "lock").await;
    let other = new_account(h, "lock2").await;
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(json!({"token": null, "inventory": inventory("lk-1")})),
        )
        .await;
    let j = expect(&r, 201).clone();
    assert_eq!(j["status"], "pending_approval");
    let code = j["approval_code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 6);
    assert!(
        code.chars()
            .all(|c| "23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(c)),
        "{code}"
    );
    let machine = j["machine_uuid"].as_str().unwrap().to_string();
    let claim = json!({"machine_uuid": machine, "claim_secret": j["claim_secret"]});

    // Pending machines are in no account.
    assert_eq!(h.get("/api/machines", &key).await.json, json!([]));
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/claim",
            None,
            Some(claim.clone()),
        )
        .await;
    assert_eq!(expect(&r, 200)["status"], "pending_approval");

    // Five wrong guesses, then even the right code is refused.
    let wrong = if code == "222222" { "333333" } else { "222222" };
    for i in 0..5 {
        let r = h
            .post(
                "/api/machines/approve",
                &key,
                json!({"code": if i == 0 { "22222O" } else { wrong }}),
            )
            .await;
        expect(&r, 404);
    }
    let r = h
        .post("/api/machines/approve", &key, json!({"code": code}))
        .await;
    let err = expect(&r, 429)["error"].as_str().unwrap().to_string();
    assert!(err.contains("locked"), "{err}");
    assert!(r.headers.get("retry-after").is_some());
    // Another account is not locked; lower case and dashes are accepted.
    let typed = format!("{}-{}", &code[..3], &code[3..]).to_lowercase();
    let r = h
        .post("/api/machines/approve", &other, json!({"code": typed}))
        .await;
    assert_eq!(expect(&r, 200)["state"], "approved");
    // The code is single-use.
    expect(
        &h.post("/api/machines/approve", &other, json!({"code": code}))
            .await,
        404,
    );

    // The credential is handed out once.
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/claim",
            None,
            Some(claim.clone()),
        )
        .await;
    assert_eq!(expect(&r, 200)["status"], "approved");
    let cred = r.json["credential"].as_str().unwrap().to_string();
    let r = h
        .call(Method::POST, "/api/agent/v1/claim", None, Some(claim))
        .await;
    assert!(r.status.is_client_error());
    expect(
        &h.post(
            "/api/agent/v1/heartbeat",
            &cred,
            json!({"environment": "installer"}),
        )
        .await,
        200,
    );

    // Expired codes are refused and replaced.
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(json!({"inventory": inventory("lk-2")})),
        )
        .await;
    let j = expect(&r, 201).clone();
    let old = j["approval_code"].as_str().unwrap().to_string();
    h.sql(
        "UPDATE machines SET code_expires_at = 1 WHERE id = $1",
        &[j["machine_uuid"].as_str().unwrap()],
    )
    .await;
    let r = h
        .post("/api/machines/approve", &other, json!({"code": old}))
        .await;
    assert!(
        expect(&r, 404)["error"]
            .as_str()
            .unwrap()
            .contains("expire")
    );
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/claim",
            None,
            Some(json!({"machine_uuid": j["machine_uuid"], "claim_secret": j["claim_secret"]})),
        )
        .await;
    assert_ne!(expect(&r, 200)["approval_code"].as_str().unwrap(), old);
}

async fn case_secrets_never_leak(h: &Harness) {
    let key = new_account(h, "secret").await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let reg_token = format!("rt-{}", uuid::Uuid::new_v4().simple());
    let r = h
        .post(
            "/api/registry-credentials",
            &key,
            json!({"registry": "registry.private:5000", "username": "robot", "password": password}),
        )
        .await;
    let cred_id = expect(&r, 201)["id"].as_str().unwrap().to_string();
    let r = h
        .post(
            "/api/registry-credentials",
            &key,
            json!({"registry": "ghcr.io", "token": reg_token}),
        )
        .await;
    expect(&r, 201);
    let r = h
        .post(
            "/api/registry-credentials",
            &key,
            json!({"registry": "x.io", "username": "u"}),
        )
        .await;
    expect(&r, 400);
    expect(&h.get("/api/registry-credentials", &key).await, 200);
    let r = h
        .post(
            "/api/images",
            &key,
            json!({"name": "private", "oci_url": "registry.private:5000/os:1",
        "registry_credential_id": cred_id}),
        )
        .await;
    expect(&r, 201);
    role(h, &key, "priv", Some("private"), None).await;
    let t = token(h, &key, json!({"roles": ["priv"]})).await;
    let (m, mcred) = register(h, &t, "sec-1").await;
    let r = h
        .post(&format!("/api/machines/{m}/provision"), &key, json!({}))
        .await;
    let run = expect(&r, 201)["id"].as_str().unwrap().to_string();
    for path in [
        "/api/images",
        "/api/roles",
        "/api/machines",
        &format!("/api/runs/{run}"),
        &format!("/api/machines/{m}/runs"),
        "/api/openapi.json",
        "/metrics",
    ] {
        expect(&h.get(path, &key).await, 200);
    }
    // Deleting a credential in use is refused, naming the image.
    let r = h
        .delete(&format!("/api/registry-credentials/{cred_id}"), &key)
        .await;
    assert!(
        expect(&r, 409)["error"]
            .as_str()
            .unwrap()
            .contains("private")
    );

    let user_bodies = h.all_bodies();
    // The agent of the machine gets the credential: it needs it to pull.
    let o = h.get("/api/agent/v1/orders", &mcred).await;
    assert_eq!(
        o.json["order"]["image"]["registry_auth"],
        json!({"kind": "basic", "username": "robot", "password": password})
    );

    for secret in [&password, &reg_token] {
        assert!(
            !user_bodies.contains(secret.as_str()),
            "a user API response contains a registry secret"
        );
    }
    // Stored sealed, not in clear.
    let rows = sqlx::query("SELECT secret_sealed FROM registry_credentials")
        .fetch_all(&h.state.db.pool)
        .await
        .unwrap();
    for r in rows {
        let sealed: String = sqlx::Row::get(&r, "secret_sealed");
        assert!(!sealed.contains(&password) && !sealed.contains(&reg_token));
    }
    // No log line carries a registry secret, an API key or a machine credential.
    let logs = log_text();
    assert!(
        logs.contains("registry credential stored"),
        "log capture is not working"
    );
    for secret in [&password, &reg_token, &key, &h.admin, &mcred, &t] {
        assert!(
            !logs.contains(secret.as_str()),
            "a log line contains a secret"
        );
    }
}

async fn case_provisioning_flow(h: &Harness) {
    let key = new_account(h, "prov").await;
    expect(
        &h.put(
            "/api/account/settings",
            &key,
            json!({"default_image": "debian-12"}),
        )
        .await,
        200,
    );
    let (m, cred) = register(h, &token(h, &key, json!({})).await, "prov-1").await;

    // No order yet; a long-poll with the current version waits, then answers unchanged.
    let o = h.get("/api/agent/v1/orders", &cred).await;
    let v0 = expect(&o, 200)["version"].as_u64().unwrap();
    assert!(o.json["order"].is_null());
    let start = Instant::now();
    let o = h
        .get(&format!("/api/agent/v1/orders?after={v0}&wait=1"), &cred)
        .await;
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(o.json["version"].as_u64().unwrap(), v0);

    // A waiting long-poll answers at once when provisioning is triggered.
    let poll = {
        let router = h.router.clone();
        let cred = cred.clone();
        tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::get(format!("/api/agent/v1/orders?after={v0}&wait=30"))
                .header("authorization", format!("Bearer {cred}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let started = Instant::now();
            let resp = router.oneshot(req).await.unwrap();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                started.elapsed(),
                serde_json::from_slice::<Value>(&body).unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect(
        &h.call(
            Method::PATCH,
            &format!("/api/provisioning/machines/{m}"),
            Some(&key),
            Some(json!({"kexec_installer": true})),
        )
        .await,
        200,
    );
    let r = h
        .post(&format!("/api/machines/{m}/provision"), &key, json!({}))
        .await;
    let run = expect(&r, 201).clone();
    assert_eq!(run["status"], "queued");
    assert_eq!(run["steps"].as_array().unwrap().len(), 7);
    let (waited, order) = poll.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "long-poll took {waited:?}"
    );
    assert_eq!(order["order"]["kind"], "provision");
    assert_eq!(order["order"]["kexec_installer"], true);
    assert_eq!(
        order["order"]["image"]["raw_disk"]["checksum_type"],
        "sha256"
    );
    let run_id = run["id"].as_str().unwrap();
    let m_state = h.get(&format!("/api/machines/{m}"), &key).await;
    assert_eq!(m_state.json["state"], "provisioning");
    // One run at a time.
    expect(
        &h.post(
            &format!("/api/machines/{m}/provision"),
            &key,
            json!({"confirm_overwrite": true}),
        )
        .await,
        409,
    );

    // Progress: batched, idempotent, ordered by sequence number.
    let ev =
        |seq: u64, event: Value| json!({"seq": seq, "at": "2026-01-01T00:00:00Z", "event": event});
    let path = format!("/api/agent/v1/runs/{run_id}/events");
    let batch = json!({"events": [
        ev(1, json!({"type": "step_started", "step": "image_inspection"})),
        ev(2, json!({"type": "step_completed", "step": "image_inspection"})),
        ev(3, json!({"type": "progress", "step": "bootloader_streaming", "percent": 20})),
    ]});
    assert_eq!(
        expect(&h.post(&path, &cred, batch.clone()).await, 200)["acked_seq"],
        3
    );
    assert_eq!(
        expect(&h.post(&path, &cred, batch).await, 200)["acked_seq"],
        3,
        "retry is idempotent"
    );
    let gap = json!({"events": [ev(5, json!({"type": "progress", "step": "layer_extraction", "percent": 60}))]});
    assert_eq!(
        expect(&h.post(&path, &cred, gap).await, 200)["acked_seq"],
        3,
        "a gap holds back the ack"
    );
    let fill =
        json!({"events": [ev(4, json!({"type": "step_started", "step": "layer_extraction"}))]});
    assert_eq!(
        expect(&h.post(&path, &cred, fill).await, 200)["acked_seq"],
        5
    );
    let r = h.get(&format!("/api/runs/{run_id}"), &key).await;
    let j = expect(&r, 200);
    assert_eq!(j["status"], "in_progress");
    assert_eq!(j["percent"], 60);
    assert_eq!(j["current_step"], "layer_extraction");
    assert_eq!(j["events"].as_array().unwrap().len(), 5);
    assert!(j["started_at"].is_string() && j["finished_at"].is_null());
    assert_eq!(j["steps"][1]["state"], "done");
    assert_eq!(j["steps"][3]["state"], "running");
    // The order tells a restarted agent where to resume.
    assert_eq!(
        h.get("/api/agent/v1/orders", &cred).await.json["order"]["acked_seq"],
        5
    );

    let done = json!({"events": [ev(6, json!({"type": "step_started", "step": "sync_and_reboot"})), ev(7, json!({"type": "completed"}))]});
    expect(&h.post(&path, &cred, done).await, 200);
    let r = h.get(&format!("/api/runs/{run_id}"), &key).await;
    assert_eq!(r.json["status"], "completed");
    assert_eq!(r.json["percent"], 100);
    assert!(r.json["finished_at"].is_string());
    assert_eq!(
        h.get(&format!("/api/machines/{m}"), &key).await.json["state"],
        "installed"
    );
    assert!(h.get("/api/agent/v1/orders", &cred).await.json["order"].is_null());

    // Re-provisioning needs confirmation.
    let r = h
        .post(&format!("/api/machines/{m}/provision"), &key, json!({}))
        .await;
    assert!(
        expect(&r, 409)["error"]
            .as_str()
            .unwrap()
            .contains("overwrites")
    );
    let r = h
        .post(
            &format!("/api/machines/{m}/provision"),
            &key,
            json!({"confirm_overwrite": true}),
        )
        .await;
    let run2 = expect(&r, 201)["id"].as_str().unwrap().to_string();
    let fail = json!({"events": [ev(1, json!({"type": "failed", "error": "disk vda vanished"}))]});
    expect(
        &h.post(&format!("/api/agent/v1/runs/{run2}/events"), &cred, fail)
            .await,
        200,
    );
    let runs = h.get(&format!("/api/machines/{m}/runs"), &key).await;
    assert_eq!(expect(&runs, 200).as_array().unwrap().len(), 2);
    assert_eq!(runs.json[0]["status"], "failed");
    assert_eq!(runs.json[0]["error"], "disk vda vanished");
    assert_eq!(
        h.get(&format!("/api/machines/{m}"), &key).await.json["state"],
        "failed"
    );

    // Machine events.
    let r = h
        .post(
            &format!("/api/machines/{m}/actions"),
            &key,
            json!({"action": "boot_installed_system"}),
        )
        .await;
    let action = expect(&r, 201)["id"].as_str().unwrap().to_string();
    let o = h.get("/api/agent/v1/orders", &cred).await;
    assert_eq!(
        o.json["order"],
        json!({"kind": "boot_installed_system", "action_id": action})
    );
    expect(
        &h.post(
            &format!("/api/agent/v1/actions/{action}/ack"),
            &cred,
            json!({}),
        )
        .await,
        204,
    );
    expect(
        &h.post(
            &format!("/api/machines/{m}/actions"),
            &key,
            json!({"action": "reboot"}),
        )
        .await,
        201,
    );
    assert_eq!(
        h.get("/api/agent/v1/orders", &cred).await.json["order"]["kind"],
        "reboot"
    );

    // Heartbeats and offline.
    expect(
        &h.post(
            "/api/agent/v1/heartbeat",
            &cred,
            json!({"environment": "installed"}),
        )
        .await,
        200,
    );
    h.sql("UPDATE machines SET last_seen_at = 1 WHERE id = $1", &[&m])
        .await;
    assert_eq!(
        h.get(&format!("/api/machines/{m}"), &key).await.json["state"],
        "offline"
    );
    expect(
        &h.post(
            "/api/agent/v1/heartbeat",
            &cred,
            json!({"environment": "installed"}),
        )
        .await,
        200,
    );
    assert_eq!(
        h.get(&format!("/api/machines/{m}"), &key).await.json["state"],
        "failed"
    );

    // Credential rotation and revocation.
    let r = h
        .post("/api/agent/v1/credential/rotate", &cred, json!({}))
        .await;
    let cred2 = expect(&r, 200)["credential"].as_str().unwrap().to_string();
    expect(
        &h.post(
            "/api/agent/v1/heartbeat",
            &cred,
            json!({"environment": "installed"}),
        )
        .await,
        401,
    );
    expect(
        &h.post(
            "/api/agent/v1/heartbeat",
            &cred2,
            json!({"environment": "installed"}),
        )
        .await,
        200,
    );
    expect(
        &h.delete(&format!("/api/machines/{m}/credential"), &key)
            .await,
        204,
    );
    expect(
        &h.post(
            "/api/agent/v1/heartbeat",
            &cred2,
            json!({"environment": "installed"}),
        )
        .await,
        401,
    );
    assert_eq!(
        h.get(&format!("/api/machines/{m}"), &key).await.json["has_credential"],
        false
    );
    // Wrong protocol version.
    let r = h
        .call(
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(json!({"inventory": inventory("v")})),
        )
        .await;
    expect(&r, 201);
}

async fn case_images(h: &Harness) {
    let key = new_account(h, "imgs").await;
    let all = h.get("/api/images", &key).await;
    let official: Vec<&Value> = expect(&all, 200).as_array().unwrap().iter().collect();
    assert_eq!(official.len(), 2);
    assert!(official.iter().all(|i| i["official"] == true));
    let deb = official.iter().find(|i| i["name"] == "debian-12").unwrap();
    assert_eq!(
        deb["raw_disk"]["checksum_type"], "sha256",
        "checksum type detected from length"
    );

    let r = h
        .post(
            "/api/images",
            &key,
            json!({"name": "mine", "description": "x", "oci_url": "ghcr.io/me/os:1",
        "raw_disk_url": "https://x/disk.raw", "raw_checksum": "d41d8cd98f00b204e9800998ecf8427e"}),
        )
        .await;
    assert_eq!(expect(&r, 201)["raw_disk"]["checksum_type"], "md5");
    expect(
        &h.post(
            "/api/images",
            &key,
            json!({"name": "mine", "oci_url": "a/b:c"}),
        )
        .await,
        409,
    );
    let r = h
        .post(
            "/api/images",
            &key,
            json!({"name": "bad", "oci_url": "a/b:c",
        "raw_disk_url": "https://x", "raw_checksum": "abcd"}),
        )
        .await;
    assert!(
        expect(&r, 400)["error"]
            .as_str()
            .unwrap()
            .contains("checksum type")
    );
    let r = h.post("/api/images", &key, json!({"name": "bad", "oci_url": "a/b:c",
        "raw_disk_url": "https://x", "raw_checksum": "d41d8cd98f00b204e9800998ecf8427e", "raw_checksum_type": "sha512"})).await;
    expect(&r, 400);
    expect(
        &h.post("/api/images", &key, json!({"name": "none"})).await,
        400,
    );

    assert_eq!(
        h.get("/api/images?filter=custom", &key)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        h.get("/api/images?filter=official", &key)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        h.get("/api/images?filter=all", &key)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        3
    );
    expect(&h.get("/api/images?filter=weird", &key).await, 400);

    let r = h.delete("/api/images/ubuntu-24.04", &key).await;
    assert!(
        expect(&r, 403)["error"]
            .as_str()
            .unwrap()
            .contains("official")
    );
    expect(
        &h.put(
            "/api/images/ubuntu-24.04",
            &key,
            json!({"name": "ubuntu-24.04", "oci_url": "x/y:z"}),
        )
        .await,
        403,
    );

    role(h, &key, "uses-mine", Some("mine"), None).await;
    let r = h.delete("/api/images/mine", &key).await;
    assert!(
        expect(&r, 409)["error"]
            .as_str()
            .unwrap()
            .contains("uses-mine")
    );
    expect(&h.delete("/api/roles/uses-mine", &key).await, 204);
    expect(&h.delete("/api/images/mine", &key).await, 204);
    expect(&h.get("/api/images/mine", &key).await, 404);

    // Catalog re-sync: updated and removed officials.
    let (n, deleted) = kiln_controlplane::api::catalog::sync_catalog(
        &h.state.db,
        r#"{"images": [{"name": "ubuntu-24.04", "oci_url": "ghcr.io/kiln/ubuntu:24.04.1"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!((n, deleted), (1, 1));
    let all = h.get("/api/images?filter=official", &key).await;
    assert_eq!(all.json.as_array().unwrap().len(), 1);
    assert_eq!(all.json[0]["oci_url"], "ghcr.io/kiln/ubuntu:24.04.1");
}

async fn case_account_scoping(h: &Harness) {
    let a = new_account(h, "scope-a").await;
    let b = new_account(h, "scope-b").await;
    image(h, &a, "a-img").await;
    role(h, &a, "a-role", Some("a-img"), None).await;
    let (m, _) = register(h, &token(h, &a, json!({})).await, "scope-1").await;
    assert_eq!(h.get("/api/machines", &b).await.json, json!([]));
    expect(&h.get(&format!("/api/machines/{m}"), &b).await, 404);
    expect(
        &h.post(&format!("/api/machines/{m}/provision"), &b, json!({}))
            .await,
        404,
    );
    expect(&h.get("/api/images/a-img", &b).await, 404);
    expect(&h.get("/api/roles/a-role", &b).await, 404);
    assert_eq!(h.get("/api/images?filter=custom", &b).await.json, json!([]));
    // The same names may exist in another account.
    image(h, &b, "a-img").await;
    expect(
        &h.post("/api/accounts", &a, json!({"name": "sneaky"})).await,
        403,
    );
    expect(&h.get("/api/accounts", &a).await, 403);
    expect(&h.get("/api/machines", "kiln_bogus").await, 401);
    expect(&h.call(Method::GET, "/api/machines", None, None).await, 401);
    // API keys: create, use, revoke.
    let r = h.post("/api/api-keys", &a, json!({"name": "ci"})).await;
    let j = expect(&r, 201).clone();
    let ci = j["key"].as_str().unwrap();
    expect(&h.get("/api/machines", ci).await, 200);
    expect(
        &h.delete(
            &format!("/api/api-keys/{}", j["info"]["id"].as_str().unwrap()),
            &a,
        )
        .await,
        204,
    );
    expect(&h.get("/api/machines", ci).await, 401);
    expect(
        &h.post("/api/api-keys", &a, json!({"name": "x", "admin": true}))
            .await,
        403,
    );
}

async fn case_server_endpoints(h: &Harness) {
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(expect(&r, 200).clone(), Value::Null);
    let r = h.call(Method::GET, "/api/info", None, None).await;
    assert_eq!(expect(&r, 200)["ca_sha256"].as_str().unwrap().len(), 64);
    let r = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        r.text
            .contains("kiln_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("# TYPE kiln_http_request_duration_seconds histogram")
    );
    let r = h.call(Method::GET, "/api/openapi.json", None, None).await;
    let doc = expect(&r, 200);
    for p in [
        "/api/machines/approve",
        "/api/provisioning/machines/{id}",
        "/api/agent/v1/orders",
        "/api/bootstrap-tokens",
    ] {
        assert!(doc["paths"][p].is_object(), "OpenAPI misses {p}");
    }
    let r = h.call(Method::GET, "/artifacts/vmlinuz", None, None).await;
    assert!(
        expect(&r, 404)["error"]
            .as_str()
            .unwrap()
            .contains("scripts/build-installer, then copy out/kiln-installer.vmlinuz")
    );
    std::fs::create_dir_all(&h.cfg.artifacts_dir).unwrap();
    std::fs::write(h.cfg.artifacts_dir.join("kiln-agent"), b"\x7fELF-agent").unwrap();
    let r = h
        .call(Method::GET, "/artifacts/kiln-agent", None, None)
        .await;
    assert_eq!(r.text, "\x7fELF-agent");
    let r = h.call(Method::GET, "/artifacts", None, None).await;
    let list = expect(&r, 200).as_array().unwrap().clone();
    assert_eq!(list.iter().filter(|a| a["available"] == true).count(), 1);
    let r = h.call(Method::GET, "/install.sh", None, None).await;
    assert!(r.text.contains(&h.state.settings.ca_sha256));
    let r = h
        .call(Method::GET, "/api/agent/v1/orders", None, None)
        .await;
    expect(&r, 401);
    let req = axum::http::Request::post("/api/agent/v1/register")
        .header("kiln-protocol-version", "2")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"inventory": inventory("v2")}).to_string(),
        ))
        .unwrap();
    use tower::ServiceExt;
    let resp = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 426);
}

/// A synthetic ISO template: noise around a grub.cfg line ending in `count` placeholders.
fn synthetic_template(count: usize) -> (Vec<u8>, usize) {
    use kiln_controlplane::iso::{PLACEHOLDER_LEN, TAIL};
    let mut t: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.extend_from_slice(b"  linux /kiln/vmlinuz console=ttyS0,115200 ");
    let at = t.len();
    for _ in 0..count {
        let mut p = format!("#KILN-PARAMS:{PLACEHOLDER_LEN}:").into_bytes();
        p.resize(PLACEHOLDER_LEN - TAIL.len(), b' ');
        p.extend_from_slice(TAIL);
        t.extend_from_slice(&p);
        t.push(b'\n');
    }
    t.extend((0..50_000u32).map(|i| (i * 13 % 253) as u8));
    (t, at)
}

async fn get_bytes(h: &Harness, path: &str, key: Option<&str>) -> (u16, Vec<u8>, String) {
    let mut req = axum::http::Request::get(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    use tower::ServiceExt;
    let resp = h
        .router
        .clone()
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (status, bytes, text)
}

async fn case_installer_iso(h: &Harness) {
    use kiln_controlplane::iso::PLACEHOLDER_LEN;
    let url = h.state.settings.public_url.clone();
    let pin = h.state.settings.ca_sha256.clone();
    let (status, _, text) = get_bytes(h, "/artifacts/kiln.iso", None).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("scripts/build-iso --template"), "{text}");

    std::fs::create_dir_all(&h.cfg.artifacts_dir).unwrap();
    let iso_path = h.cfg.artifacts_dir.join("kiln.iso");
    let (template, at) = synthetic_template(1);
    std::fs::write(&iso_path, &template).unwrap();
    let baked_text = format!("kiln.url={url} kiln.ca=sha256:{pin}");
    for path in ["/artifacts/kiln.iso", "/api/installer/iso"] {
        let (status, iso, text) = get_bytes(h, path, None).await;
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(iso.len(), template.len(), "{path}");
        assert_eq!(&iso[..at], &template[..at], "{path}");
        assert_eq!(
            &iso[at + PLACEHOLDER_LEN..],
            &template[at + PLACEHOLDER_LEN..],
            "{path}"
        );
        let baked = std::str::from_utf8(&iso[at..at + PLACEHOLDER_LEN]).unwrap();
        assert_eq!(baked.trim_end(), baked_text, "{path}");
    }

    // A bootstrap token needs an API key; its lifetime is the one asked for.
    let (status, _, text) = get_bytes(h, "/api/installer/iso?token_ttl=7d", None).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("API key"), "{text}");
    let (status, _, text) = get_bytes(h, "/api/installer/iso?token_ttl=2d", Some(&h.admin)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("10m, 1d, 7d, 30d, 90d, 365d"), "{text}");
    let (status, _, text) = get_bytes(
        h,
        "/api/installer/iso?token_ttl=1d&roles=nope",
        Some(&h.admin),
    )
    .await;
    assert!(status >= 400 && text.contains("nope"), "{status} {text}");
    let (status, _, text) = get_bytes(h, "/api/installer/iso?roles=web", Some(&h.admin)).await;
    assert_eq!(status, 400, "{text}");
    role(h, &h.admin, "web", None, None).await;
    let (status, iso, text) = get_bytes(
        h,
        "/api/installer/iso?token_ttl=7d&roles=web",
        Some(&h.admin),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let baked = std::str::from_utf8(&iso[at..at + PLACEHOLDER_LEN])
        .unwrap()
        .trim_end()
        .to_string();
    let token = baked
        .strip_prefix(&format!("{baked_text} quiet kiln.token="))
        .unwrap_or_else(|| panic!("no token baked: {baked}"));
    let claims = h
        .state
        .tokens
        .verify(&h.state.db, token, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 7 * 86_400);
    assert_eq!(claims.roles, vec!["web".to_string()]);
    let (machine, _) = register(h, token, "iso-1").await;
    let m = h.get(&format!("/api/machines/{machine}"), &h.admin).await;
    assert_eq!(expect(&m, 200)["roles"], json!(["web"]));

    // The same parameters for PXE.
    let (status, _, ipxe) = get_bytes(h, "/boot.ipxe", None).await;
    assert_eq!(status, 200);
    assert!(ipxe.starts_with("#!ipxe\n"), "{ipxe}");
    assert!(
        ipxe.contains(&format!("kernel {url}/artifacts/vmlinuz ")) && ipxe.contains(&baked_text),
        "{ipxe}"
    );
    let (status, _, ipxe) = get_bytes(h, "/boot.ipxe?token_ttl=1d", Some(&h.admin)).await;
    assert_eq!(status, 200);
    assert!(ipxe.contains(" kiln.token="), "{ipxe}");

    // A damaged template (two placeholders) is refused with a clear error, not served.
    let (two, _) = synthetic_template(2);
    std::fs::write(&iso_path, &two).unwrap();
    let (status, _, text) = get_bytes(h, "/api/installer/iso", None).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("has 2 #KILN-PARAMS placeholders"), "{text}");
    // A template without placeholder (a plain ISO) likewise.
    std::fs::write(&iso_path, vec![0u8; 40_000]).unwrap();
    let (status, _, text) = get_bytes(h, "/artifacts/kiln.iso", None).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("not a Kiln ISO template"), "{text}");
}

/// The per-IP limits of registration without a token, claim and approval.
async fn case_rate_limits(h: &Harness) {
    let key = new_account(h, "rl").await;
    let reg = |i: usize| json!({"token": null, "inventory": inventory(&format!("rl-{i}"))});
    let mut pending = Vec::new();
    for i in 0..2 {
        let r = h
            .call_from(
                "10.0.0.1",
                Method::POST,
                "/api/agent/v1/register",
                None,
                Some(reg(i)),
            )
            .await;
        pending.push(expect(&r, 201).clone());
    }
    let r = h
        .call_from(
            "10.0.0.1",
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(reg(9)),
        )
        .await;
    let err = expect(&r, 429)["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("registrations without a token from 10.0.0.1"),
        "{err}"
    );
    assert_eq!(r.headers["retry-after"], "60");
    // Another address has its own budget.
    let r = h
        .call_from(
            "10.0.0.2",
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(reg(3)),
        )
        .await;
    expect(&r, 201);
    // Token registrations have their own budget per address (4) and per token (6).
    let t = token(h, &key, json!({})).await;
    let with_token = |ip: &'static str, i: usize| {
        let t = t.clone();
        async move {
            let body = json!({"token": t, "inventory": inventory(&format!("rlt-{i}"))});
            h.call_from(ip, Method::POST, "/api/agent/v1/register", None, Some(body))
                .await
        }
    };
    for i in 0..4 {
        expect(&with_token("10.0.0.1", i).await, 201);
    }
    let r = with_token("10.0.0.1", 4).await;
    let err = expect(&r, 429)["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("registrations with a bootstrap token from 10.0.0.1"),
        "{err}"
    );
    expect(&with_token("10.0.0.5", 5).await, 201);
    expect(&with_token("10.0.0.6", 6).await, 201);
    let r = with_token("10.0.0.7", 7).await;
    let err = expect(&r, 429)["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("registrations with this bootstrap token"),
        "{err}"
    );
    assert!(r.headers.get("retry-after").is_some());
    // Another token of the account has its own budget.
    let t2 = token(h, &key, json!({})).await;
    let body = json!({"token": t2, "inventory": inventory("rlt-8")});
    let r = h
        .call_from(
            "10.0.0.8",
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(body),
        )
        .await;
    expect(&r, 201);

    let claim = json!({"machine_uuid": pending[0]["machine_uuid"], "claim_secret": pending[0]["claim_secret"]});
    for _ in 0..3 {
        let r = h
            .call_from(
                "10.0.0.1",
                Method::POST,
                "/api/agent/v1/claim",
                None,
                Some(claim.clone()),
            )
            .await;
        expect(&r, 200);
    }
    let r = h
        .call_from(
            "10.0.0.1",
            Method::POST,
            "/api/agent/v1/claim",
            None,
            Some(claim.clone()),
        )
        .await;
    assert!(
        expect(&r, 429)["error"]
            .as_str()
            .unwrap()
            .contains("claims")
    );
    assert!(r.headers.get("retry-after").is_some());

    // Approval: the per-IP limit answers before the account lock-out would.
    let code = pending[0]["approval_code"].as_str().unwrap();
    let wrong = if code == "222222" { "333333" } else { "222222" };
    for _ in 0..2 {
        let r = h
            .call_from(
                "10.0.0.3",
                Method::POST,
                "/api/machines/approve",
                Some(&key),
                Some(json!({"code": wrong})),
            )
            .await;
        expect(&r, 404);
    }
    let r = h
        .call_from(
            "10.0.0.3",
            Method::POST,
            "/api/machines/approve",
            Some(&key),
            Some(json!({"code": code})),
        )
        .await;
    let err = expect(&r, 429)["error"].as_str().unwrap().to_string();
    assert!(err.contains("approval attempts from 10.0.0.3"), "{err}");
    assert!(r.headers.get("retry-after").is_some());
    let r = h
        .call_from(
            "10.0.0.4",
            Method::POST,
            "/api/machines/approve",
            Some(&key),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(expect(&r, 200)["state"], "approved");
}

async fn rate_limited_harness(database_url: Option<String>) -> Harness {
    use kiln_controlplane::ratelimit::{Limit, RateLimits};
    Harness::with_config(database_url, |cfg| {
        cfg.rate_limits = RateLimits {
            register: Limit {
                burst: 2,
                per_minute: 1,
            },
            claim: Limit {
                burst: 3,
                per_minute: 1,
            },
            approve: Limit {
                burst: 2,
                per_minute: 1,
            },
            token_register: Limit {
                burst: 4,
                per_minute: 1,
            },
            per_token: Limit {
                burst: 6,
                per_minute: 1,
            },
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rate_limits() {
    case_rate_limits(&rate_limited_harness(None).await).await;
}

// ------------------------------------------------------------------ SQLite (unit tier)

macro_rules! sqlite_cases {
    ($($name:ident => $case:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let h = Harness::new(None).await;
            $case(&h).await;
        }
    )*};
}

sqlite_cases! {
    sqlite_tokens => case_tokens,
    sqlite_one_image_rule => case_one_image_rule,
    sqlite_resolution_chain => case_resolution_chain,
    sqlite_approval_lockout => case_approval_lockout,
    sqlite_secrets_never_leak => case_secrets_never_leak,
    sqlite_provisioning_flow => case_provisioning_flow,
    sqlite_images => case_images,
    sqlite_account_scoping => case_account_scoping,
    sqlite_server_endpoints => case_server_endpoints,
    sqlite_installer_iso => case_installer_iso,
    sqlite_machine_takeover => case_machine_takeover,
    sqlite_placeholder_uuids => case_placeholder_uuids,
    sqlite_concurrent_provision => case_concurrent_provision,
    sqlite_foreign_registry_credential => case_foreign_registry_credential,
    sqlite_metrics_labels_bounded => case_metrics_labels_bounded,
    sqlite_register_body_limit => case_register_body_limit,
    sqlite_pending_machines_expire => case_pending_machines_expire,
}

// ------------------------------------------------------------------ PostgreSQL (root tier)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root: starts a PostgreSQL 15 cluster as user postgres"]
async fn root_postgres_api_suite() {
    let pg = Postgres::start();
    macro_rules! run {
        ($($case:ident),*) => {$(
            let url = pg.database(stringify!($case)).await;
            let h = Harness::new(Some(url)).await;
            assert_eq!(h.state.db.backend, kiln_controlplane::db::Backend::Postgres);
            $case(&h).await;
            h.state.db.pool.close().await;
        )*};
    }
    run!(
        case_tokens,
        case_one_image_rule,
        case_resolution_chain,
        case_approval_lockout,
        case_secrets_never_leak,
        case_provisioning_flow,
        case_images,
        case_account_scoping,
        case_server_endpoints,
        case_installer_iso
    );
    run!(
        case_machine_takeover,
        case_placeholder_uuids,
        case_concurrent_provision,
        case_foreign_registry_credential,
        case_metrics_labels_bounded,
        case_register_body_limit,
        case_pending_machines_expire
    );
    // In-memory limits, but the limited endpoints still write to PostgreSQL.
    let h = rate_limited_harness(Some(pg.database("case_rate_limits").await)).await;
    case_rate_limits(&h).await;
    h.state.db.pool.close().await;
}
