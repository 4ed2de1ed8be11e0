//! Security cases of the API suite (issue 11): what a bootstrap token, another account or an
//! anonymous client must not reach. Run on SQLite and PostgreSQL like every case.

use super::common::{self, Harness, expect};
use super::{image, inventory, new_account, register, token};
use axum::http::Method;
use serde_json::json;

/// `POST /register` with a token, optionally carrying a machine credential; the raw answer.
async fn register_as(
    h: &Harness,
    token: &str,
    system_uuid: &str,
    credential: Option<&str>,
) -> common::Resp {
    h.call(
        Method::POST,
        "/api/agent/v1/register",
        credential,
        Some(json!({"token": token, "inventory": inventory(system_uuid)})),
    )
    .await
}

/// Finding 1: a token and a known `system_uuid` never yield that machine's identity.
pub async fn case_machine_takeover(h: &Harness) {
    let key = new_account(h, "takeover").await;
    let t = token(h, &key, json!({})).await;
    let su = "4c4c4544-0042-3510-8050-b4c04f4a4d31";
    let (victim, victim_cred) = register(h, &t, su).await;
    // The attacker knows the token and the victim's system UUID, not its credential.
    let r = register_as(h, &t, su, None).await;
    let j = expect(&r, 201);
    let intruder = j["machine_uuid"].as_str().unwrap().to_string();
    let intruder_cred = j["credential"].as_str().unwrap().to_string();
    assert_ne!(intruder, victim, "a token registration took over {victim}");
    // The real machine keeps its credential; the new one is flagged as a possible duplicate.
    let hb = json!({"environment": "installer"});
    expect(
        &h.post("/api/agent/v1/heartbeat", &victim_cred, hb.clone())
            .await,
        200,
    );
    let m = h.get(&format!("/api/machines/{intruder}"), &key).await;
    assert_eq!(expect(&m, 200)["duplicate_of"], victim.as_str());
    let m = h.get(&format!("/api/machines/{victim}"), &key).await;
    assert!(expect(&m, 200)["duplicate_of"].is_null());
    // The intruder's credential sees none of the victim's orders.
    let o = h.get("/api/agent/v1/orders", &intruder_cred).await;
    assert!(expect(&o, 200)["order"].is_null());
    // Re-identification needs the machine's current credential: same id, new credential.
    let r = register_as(h, &t, su, Some(&victim_cred)).await;
    let j = expect(&r, 201);
    assert_eq!(j["machine_uuid"], victim.as_str());
    let new_cred = j["credential"].as_str().unwrap().to_string();
    assert_ne!(new_cred, victim_cred);
    expect(&h.post("/api/agent/v1/heartbeat", &new_cred, hb).await, 200);
    // A wrong or stale credential re-identifies nothing.
    let r = register_as(h, &t, su, Some(&victim_cred)).await;
    expect(&r, 401);
}

/// Finding 2: placeholder SMBIOS UUIDs never merge machines nor mark them as duplicates.
pub async fn case_placeholder_uuids(h: &Harness) {
    let key = new_account(h, "placeholder").await;
    let t = token(h, &key, json!({})).await;
    for su in [
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "03000200-0400-0500-0006-000700080009",
        "00020003-0004-0005-0006-000700080009",
    ] {
        let (a, _) = register(h, &t, su).await;
        let (b, _) = register(h, &t, su).await;
        assert_ne!(a, b, "{su} merged two machines");
        let m = h.get(&format!("/api/machines/{b}"), &key).await;
        assert!(
            expect(&m, 200)["duplicate_of"].is_null(),
            "{su} is a placeholder, not a duplicate: {}",
            m.text
        );
    }
}

/// One raw call on a clone of the router (for concurrent requests); the status.
async fn raw_status(router: axum::Router, method: Method, path: String, key: String) -> u16 {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    router.oneshot(req).await.unwrap().status().as_u16()
}

/// Finding 10: concurrent provision requests create exactly one active run.
pub async fn case_concurrent_provision(h: &Harness) {
    let key = new_account(h, "race").await;
    image(h, &key, "race-os").await;
    expect(
        &h.put(
            "/api/account/settings",
            &key,
            json!({"default_image": "race-os"}),
        )
        .await,
        200,
    );
    let t = token(h, &key, json!({})).await;
    let (m, _) = register(h, &t, "race-1").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(raw_status(
                h.router.clone(),
                Method::POST,
                format!("/api/machines/{m}/provision"),
                key.clone(),
            ))
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let runs = h.get(&format!("/api/machines/{m}/runs"), &key).await;
    assert_eq!(expect(&runs, 200).as_array().unwrap().len(), 1);
}

/// Finding 11: another account's registry credential is 404, its images stay unnamed.
pub async fn case_foreign_registry_credential(h: &Harness) {
    let owner = new_account(h, "cred-owner").await;
    let other = new_account(h, "cred-other").await;
    let r = h
        .post(
            "/api/registry-credentials",
            &owner,
            json!({"registry": "registry.local", "username": "robot", "password": "pw"}),
        )
        .await;
    let cred = expect(&r, 201)["id"].as_str().unwrap().to_string();
    let r = h
        .post(
            "/api/images",
            &owner,
            json!({"name": "secret-project-os", "oci_url": "registry.local/os:1",
                   "registry_credential_id": cred}),
        )
        .await;
    expect(&r, 201);
    let r = h
        .delete(&format!("/api/registry-credentials/{cred}"), &other)
        .await;
    expect(&r, 404);
    assert!(!r.text.contains("secret-project-os"), "{}", r.text);
    // The owner still gets the 409 naming its image.
    let r = h
        .delete(&format!("/api/registry-credentials/{cred}"), &owner)
        .await;
    assert!(
        expect(&r, 409)["error"]
            .as_str()
            .unwrap()
            .contains("secret-project-os")
    );
}

/// Finding 4: made-up methods and paths do not grow `/metrics`.
pub async fn case_metrics_labels_bounded(h: &Harness) {
    let size = |r: &common::Resp| r.text.len();
    let call = |m: String| async move {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        h.call(method, "/nope", None, None).await
    };
    // Warm up: the first scrapes and the first stranger create their series once.
    call("FIRST".into()).await;
    expect(&h.get("/metrics", &h.admin).await, 200);
    let before = size(&h.get("/metrics", &h.admin).await);
    for i in 0..200u32 {
        let m = format!("X{:08X}", i.wrapping_mul(2_654_435_761));
        call(m).await;
    }
    let after = h.get("/metrics", &h.admin).await;
    let grown = size(&after) as i64 - before as i64;
    assert!(
        grown < 300,
        "/metrics grew by {grown} bytes:\n{}",
        after.text
    );
}

/// An inventory of `disks` disks and `nics` NICs with realistic model and serial strings.
fn big_inventory(disks: usize, nics: usize) -> serde_json::Value {
    let mut inv = inventory("5a1e0c2d-7b3f-4e21-9c8d-0123456789ab");
    inv["disks"] = (0..disks)
        .map(|i| {
            json!({"name": format!("nvme{i}n1"), "size_bytes": 3_840_755_982_336u64,
                   "model": "SAMSUNG MZQL23T8HCLS-00A07", "serial": format!("S64HNE0T{i:06}"),
                   "rotational": false})
        })
        .collect();
    inv["nics"] = (0..nics)
        .map(|i| json!({"name": format!("enp{i}s0f0np0"), "mac": "b8:ce:f6:12:34:56", "speed_mbps": 100_000}))
        .collect();
    inv
}

/// Finding 3 (body size): register and claim take a few KB, not megabytes.
pub async fn case_register_body_limit(h: &Harness) {
    let real = big_inventory(64, 32);
    let size = serde_json::to_vec(&json!({"token": null, "inventory": real}))
        .unwrap()
        .len();
    eprintln!("register body with 64 disks and 32 NICs: {size} bytes");
    assert!(size * 3 < 64 << 10, "{size} bytes leave too little margin");
    let r = h
        .call_from(
            "10.9.0.1",
            Method::POST,
            "/api/agent/v1/register",
            None,
            Some(json!({"token": null, "inventory": real})),
        )
        .await;
    expect(&r, 201);
    let huge = big_inventory(12_000, 0);
    for path in ["/api/agent/v1/register", "/api/agent/v1/claim"] {
        let body = json!({"token": null, "inventory": huge, "machine_uuid": uuid::Uuid::nil(),
                          "claim_secret": "kcs_x"});
        let r = h
            .call_from("10.9.0.2", Method::POST, path, None, Some(body))
            .await;
        expect(&r, 413);
    }
}

/// Finding 3 (expiry): a pending machine goes 24 h after its last code expired.
pub async fn case_pending_machines_expire(h: &Harness) {
    let register = |ip: &'static str| async move {
        let r = h
            .call_from(
                ip,
                Method::POST,
                "/api/agent/v1/register",
                None,
                Some(json!({"token": null, "inventory": inventory("exp-1")})),
            )
            .await;
        expect(&r, 201).clone()
    };
    let claim = |m: serde_json::Value| async move {
        let body = json!({"machine_uuid": m["machine_uuid"], "claim_secret": m["claim_secret"]});
        h.call_from(
            "10.8.0.9",
            Method::POST,
            "/api/agent/v1/claim",
            None,
            Some(body),
        )
        .await
        .status
        .as_u16()
    };
    let old = register("10.8.0.1").await;
    let recent = register("10.8.0.2").await;
    let day = 24 * 3600 * 1000i64;
    let now = kiln_controlplane::db::now_ms();
    let age = |m: &serde_json::Value, at: i64| {
        format!(
            "UPDATE machines SET code_expires_at = {at}, created_at = {at}, last_seen_at = {at} WHERE id = '{}'",
            m["machine_uuid"].as_str().unwrap()
        )
    };
    h.sql(&age(&old, now - day - 60_000), &[]).await;
    h.sql(&age(&recent, now - day + 3_600_000), &[]).await;
    // The next registration sweeps (a periodic sweep does it too).
    let fresh = register("10.8.0.3").await;
    assert_eq!(
        claim(old).await,
        401,
        "the expired pending machine is still there"
    );
    assert_eq!(claim(recent).await, 200);
    assert_eq!(claim(fresh).await, 200);
    let m = h.get("/metrics", &h.admin).await;
    expect(&m, 200);
    assert!(
        m.text.contains("kiln_pending_machines_expired_total 1\n"),
        "{}",
        m.text
    );
}
