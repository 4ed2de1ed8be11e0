//! The web dashboard in a real browser: Debian's headless Chromium driven over WebDriver
//! (`/usr/bin/chromedriver`) against a live server on 127.0.0.1 (the real TLS listener),
//! with this test playing the agent's part over the agent API. Screenshots of every page go
//! to `out/test-logs/dashboard/`.
//!
//! `#[ignore]`d (root tier, `scripts/test root`): it needs the chromium and chromium-driver
//! packages `scripts/setup` installs.

mod common;

use base64::Engine;
use common::{Live, ev, post_events};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process and one headless Chromium session; both stopped on drop.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Browser {
        let port = common::free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting /usr/bin/chromedriver (apt-get install chromium-driver)");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{root}/status")).send().await;
            if let Ok(r) = ready
                && r.json::<Value>().await.unwrap()["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let r: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"));
        Browser {
            driver,
            http,
            base: format!("{root}/session/{id}"),
            profile,
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(
            r["value"].get("error").is_none(),
            "WebDriver {method} {path}: {r}"
        );
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs a script in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `sel` exists and returns its element id.
    async fn find(&self, sel: &str) -> String {
        self.wait_for(&format!("document.querySelector({sel:?}) !== null"), sel)
            .await;
        let e = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": sel})),
            )
            .await;
        e[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {sel}: {e}"))
            .to_string()
    }

    async fn click(&self, sel: &str) {
        let e = self.find(sel).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_in(&self, sel: &str, text: &str) {
        let e = self.find(sel).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Picks the option of a `<select>` by its value, as a keyboard user would.
    async fn select(&self, sel: &str, value: &str) {
        self.find(sel).await;
        self.js(&format!(
            "const s = document.querySelector({sel:?}); s.value = {value:?}; \
             s.dispatchEvent(new Event('change')); return s.value"
        ))
        .await;
    }

    /// The visible text of `sel` ("" when absent).
    async fn text(&self, sel: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({sel:?}); return e ? e.innerText : ''"
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    async fn wait_for(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.js(&format!("return !!({condition})")).await == true {
                return;
            }
            if Instant::now() > deadline {
                let body = self.text("body").await;
                panic!("timed out waiting for {what}; page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `sel`'s text contains `want`.
    async fn wait_text(&self, sel: &str, want: &str) -> String {
        self.wait_for(
            &format!(
                "document.querySelector({sel:?}) && document.querySelector({sel:?}).innerText.includes({want:?})"
            ),
            &format!("{sel} to show {want:?}"),
        )
        .await;
        self.text(sel).await
    }

    async fn screenshot(&self, name: &str) {
        let png = self.cmd(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(shots_dir().join(format!("{name}.png")), bytes).unwrap();
    }

    async fn source(&self) -> String {
        self.cmd(Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn session_cookie(&self) -> Option<String> {
        let all = self.cmd(Method::GET, "/cookie", None).await;
        all.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "kiln_session")
            .map(|c| c.clone().to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: ending the session stops Chromium; then stop chromedriver (our child).
        let _ = std::process::Command::new("curl")
            .args(["-s", "-X", "DELETE", &self.base])
            .output();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = self.profile.path();
    }
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../out/test-logs/dashboard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn inventory() -> Value {
    json!({"hostname": "rack1-node7", "arch": "x86_64", "firmware": "uefi", "cpu_model": "EPYC 7302",
        "cpu_cores": 16, "memory_bytes": 64u64 << 30, "system_vendor": "Supermicro",
        "system_serial": "S123", "system_uuid": "uuid-node7",
        "disks": [{"name": "nvme0n1", "size_bytes": 480u64 << 30, "model": "Samsung PM983", "rotational": false},
                  {"name": "sda", "size_bytes": 4u64 << 40, "rotational": true}],
        "nics": [{"name": "eno1", "mac": "0c:c4:7a:00:00:07", "speed_mbps": 10000}]})
}

/// A raw HTTPS request with a session cookie, as a forger or a stale tab would send it.
async fn with_cookie(
    live: &Live,
    method: Method,
    path: &str,
    cookie: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut req = http
        .request(method, format!("{}{path}", live.url))
        .header("Cookie", format!("kiln_session={cookie}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if extra.iter().any(|(k, _)| *k == "Content-Type") {
        req = req.body("{}");
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (scripts/setup); root tier"]
async fn root_dashboard_walk() {
    let live = Live::start().await;
    let b = Browser::start().await;
    let url = format!("{}/", live.url);
    let password = "s3cret-registry-pass";

    // A wrong key is refused with a clear message.
    b.goto(&url).await;
    b.type_in("#signin-key", "kiln_not-a-key").await;
    b.screenshot("01-sign-in").await;
    b.click("#signin-btn").await;
    b.wait_text("#signin-error", "unknown or revoked API key")
        .await;

    // Sign in: the cookie is a session id, not the key.
    b.type_in("#signin-key", &live.admin).await;
    b.click("#signin-btn").await;
    b.wait_text("h1", "Machines").await;
    let cookie = b.session_cookie().await.expect("session cookie");
    let c: Value = serde_json::from_str(&cookie).unwrap();
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["secure"], true, "{c}");
    assert_eq!(c["sameSite"], "Strict", "{c}");
    assert_eq!(c["path"], "/", "{c}");
    let sid = c["value"].as_str().unwrap().to_string();
    assert!(
        !sid.contains(&live.admin) && sid.starts_with("ks_"),
        "{sid}"
    );
    b.wait_text("#machine-list", "No machines yet").await;
    b.screenshot("02-machines-empty").await;

    // CSRF: the cookie alone cannot change anything, nor can another origin.
    let json_ct = ("Content-Type", "application/json");
    let (st, body) = with_cookie(&live, Method::POST, "/api/roles", &sid, &[json_ct]).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("X-CSRF-Token"), "{body}");
    let csrf = b.js("return S.csrf").await.as_str().unwrap().to_string();
    let (st, body) = with_cookie(
        &live,
        Method::POST,
        "/api/roles",
        &sid,
        &[
            json_ct,
            ("X-CSRF-Token", &csrf),
            ("Origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("cross-origin"), "{body}");
    let (st, body) = with_cookie(&live, Method::POST, "/api/roles", "ks_forged", &[json_ct]).await;
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("sign in again"), "{body}");

    // Registry credential: the secret is write-only.
    b.goto(&format!("{url}#/credentials")).await;
    b.type_in("#cred-registry", "registry.lan:5000").await;
    b.type_in("#cred-username", "robot").await;
    b.type_in("#cred-password", password).await;
    b.click("#cred-create").await;
    b.wait_text("#cred-msg", "saved").await;
    b.wait_text("table", "registry.lan:5000").await;
    b.screenshot("03-registry-credentials").await;

    // Image with that credential; Official/Custom filters.
    b.goto(&format!("{url}#/images")).await;
    b.type_in("#img-name", "debian-web").await;
    b.type_in("#img-oci", "registry.lan:5000/kiln/debian:12")
        .await;
    let cred_id = live
        .client(Some(&live.admin))
        .await
        .get("/api/registry-credentials")
        .await
        .unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.select("#img-cred", &cred_id).await;
    b.click("#img-create").await;
    b.wait_text("#image-msg", "Image debian-web saved").await;
    let all = b.wait_text("table", "debian-web").await;
    assert!(
        all.contains("Official") && all.contains("ubuntu-24.04"),
        "{all}"
    );
    b.screenshot("04-images-all").await;
    b.click("#filter-custom").await;
    b.wait_for(
        "!document.querySelector('table').innerText.includes('ubuntu')",
        "custom filter",
    )
    .await;
    b.click("#filter-official").await;
    b.wait_for(
        "!document.querySelector('table').innerText.includes('debian-web')",
        "official filter",
    )
    .await;
    assert!(b.text("table").await.contains("read-only"));

    // Role: the server's cloud-init validation error is shown, then a valid one is saved.
    b.goto(&format!("{url}#/roles")).await;
    b.type_in("#role-name", "web").await;
    b.select("#role-image", "debian-web").await;
    b.type_in("#role-userdata", "#cloud-config\nruncmd: [unclosed")
        .await;
    b.click("#role-create").await;
    b.wait_for(
        "document.querySelector('#role-error').classList.contains('err')",
        "cloud-init error",
    )
    .await;
    let err = b.text("#role-error").await;
    assert!(
        err.contains("user_data") || err.contains("YAML") || err.contains("cloud"),
        "{err}"
    );
    b.screenshot("05-roles-error").await;
    b.type_in(
        "#role-userdata",
        "#cloud-config\nruncmd:\n  - echo hello from kiln",
    )
    .await;
    b.click("#role-create").await;
    b.wait_text("#role-error", "Role web saved").await;
    b.screenshot("06-roles").await;

    // Organization settings: default image.
    b.goto(&format!("{url}#/settings")).await;
    b.select("#settings-image", "debian-web").await;
    b.click("#settings-save").await;
    b.wait_text("#settings-msg", "Default image: debian-web")
        .await;
    b.screenshot("07-settings").await;

    // Token: shown once, with a copy button.
    b.goto(&format!("{url}#/tokens")).await;
    b.select("#token-lifetime", "7d").await;
    b.click("#token-create").await;
    b.wait_text("#token-msg", "lifetime 7d").await;
    let token = b
        .js("return document.querySelector('#token-value').value")
        .await;
    assert_eq!(token.as_str().unwrap().split('.').count(), 5, "{token}");
    b.find("#token-copy").await;
    b.screenshot("08-tokens").await;

    // Installer page: links.
    b.goto(&format!("{url}#/installer")).await;
    b.wait_text("#view", "install.sh one-liner").await;
    for sel in ["#iso-plain", "#iso-token", "#dl-vmlinuz", "#dl-ipxe"] {
        b.find(sel).await;
    }
    b.screenshot("09-installer").await;

    // A simulated agent registers without a token and is approved by its code.
    let anon = live.client(None).await;
    let pending = anon
        .call(
            Method::POST,
            "/api/agent/v1/register",
            Some(&json!({"inventory": inventory()})),
        )
        .await
        .unwrap();
    let code = pending["approval_code"].as_str().unwrap();
    let machine = pending["machine_uuid"].as_str().unwrap().to_string();
    b.goto(&format!("{url}#/machines")).await;
    b.type_in("#approve-code", "ZZZZZZ").await;
    b.click("#approve-btn").await;
    b.wait_for(
        "document.querySelector('#approve-msg').classList.contains('err')",
        "wrong code error",
    )
    .await;
    b.type_in("#approve-code", code).await;
    b.type_in("#approve-roles", "web").await;
    b.click("#approve-btn").await;
    b.wait_text("#approve-msg", "Approved rack1-node7").await;
    let claimed = anon
        .call(
            Method::POST,
            "/api/agent/v1/claim",
            Some(&json!({"machine_uuid": machine, "claim_secret": pending["claim_secret"]})),
        )
        .await
        .unwrap();
    let agent = anon.with_bearer(claimed["credential"].as_str().unwrap().to_string());
    agent
        .call(
            Method::POST,
            "/api/agent/v1/heartbeat",
            Some(&json!({"environment": "installer"})),
        )
        .await
        .unwrap();
    b.goto(&format!("{url}#/machines?state=approved")).await;
    b.wait_text("#machine-list", "rack1-node7").await;
    b.screenshot("10-machines").await;

    // Machine detail: inventory, roles, kexec switch, actions.
    b.goto(&format!("{url}#/machines/{machine}")).await;
    let view = b.wait_text("#view", "nvme0n1").await;
    assert!(view.contains("eno1") && view.contains("uefi"), "{view}");
    b.click("#kexec-switch").await;
    b.wait_text("#machine-msg", "kexec_installer on").await;
    b.click("#action-reboot").await;
    b.wait_text("#confirm-text", "Reboot rack1-node7").await;
    b.click("#confirm-ok").await;
    b.wait_text("#machine-msg", "Reboot: sent").await;
    b.screenshot("11-machine-detail").await;

    // Provision: the confirmation names the disk; the percent moves as the agent reports.
    b.click("#tab-provisions").await;
    b.wait_text("#runs", "No provisioning runs").await;
    b.click("#provision-btn").await;
    let ask = b.wait_text("#confirm-text", "OVERWRITES").await;
    assert!(ask.contains("nvme0n1"), "{ask}");
    b.screenshot("12-provision-confirm").await;
    b.click("#confirm-ok").await;
    b.wait_text("#provision-msg", "Run started (debian-web)")
        .await;
    let run = live
        .client(Some(&live.admin))
        .await
        .get(&format!("/api/machines/{machine}/runs"))
        .await
        .unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    post_events(
        &agent,
        &run,
        vec![
            ev(
                1,
                json!({"type": "step_started", "step": "image_inspection"}),
            ),
            ev(
                2,
                json!({"type": "progress", "step": "bootloader_streaming", "percent": 30}),
            ),
        ],
    )
    .await;
    b.wait_text(".run-percent", "30%").await;
    b.wait_text(".run-step", "bootloader streaming").await;
    post_events(
        &agent,
        &run,
        vec![ev(
            3,
            json!({"type": "progress", "step": "layer_extraction", "percent": 70}),
        )],
    )
    .await;
    b.wait_text(".run-percent", "70%").await;
    b.wait_text("#run-log", "layer extraction: 70%").await;
    b.screenshot("13-provisions-running").await;
    post_events(&agent, &run, vec![ev(4, json!({"type": "completed"}))]).await;
    b.wait_text("#runs", "completed").await;
    b.screenshot("14-provisions-completed").await;

    // Credential revoke (after the run: the agent is locked out from here on).
    b.goto(&format!("{url}#/machines/{machine}")).await;
    b.click("#revoke-cred").await;
    b.wait_text("#confirm-text", "Revoke the credential").await;
    b.click("#confirm-ok").await;
    b.wait_for(
        "document.querySelector('#revoke-cred') && document.querySelector('#revoke-cred').disabled",
        "revoked",
    )
    .await;
    let r = agent
        .call(
            Method::POST,
            "/api/agent/v1/heartbeat",
            Some(&json!({"environment": "installer"})),
        )
        .await;
    assert!(r.is_err(), "a revoked credential still works");

    // Phone width.
    b.cmd(
        Method::POST,
        "/window/rect",
        Some(json!({"width": 390, "height": 844})),
    )
    .await;
    b.goto(&format!("{url}#/machines")).await;
    b.wait_text("#machine-list", "rack1-node7").await;
    b.screenshot("15-machines-390px").await;
    b.cmd(
        Method::POST,
        "/window/rect",
        Some(json!({"width": 1280, "height": 800})),
    )
    .await;

    // No page or response shows a secret.
    for route in [
        "#/credentials",
        "#/images",
        "#/roles",
        "#/settings",
        "#/installer",
        "#/machines",
    ] {
        b.goto(&format!("{url}{route}")).await;
        b.wait_for("document.getElementById('view').dataset.page", route)
            .await;
        let src = b.source().await;
        assert!(
            !src.contains(password),
            "{route} shows the registry password"
        );
        assert!(!src.contains(&live.admin), "{route} shows the API key");
    }
    let (_, creds) = with_cookie(&live, Method::GET, "/api/registry-credentials", &sid, &[]).await;
    assert!(
        creds.contains("registry.lan:5000") && !creds.contains(password),
        "{creds}"
    );
    let (_, session) = with_cookie(&live, Method::GET, "/api/session", &sid, &[]).await;
    assert!(
        !session.contains(&live.admin) && !session.contains(&sid),
        "{session}"
    );

    // Sign out deletes the session: the old cookie is refused.
    b.click("#signout").await;
    b.wait_text("#signin-error", "Signed out").await;
    let (st, body) = with_cookie(&live, Method::GET, "/api/machines", &sid, &[]).await;
    assert_eq!(st, 401, "{body}");

    // An expired session is refused with a clear message.
    b.type_in("#signin-key", &live.admin).await;
    b.click("#signin-btn").await;
    b.wait_text("h1", "Machines").await;
    sqlx::query("UPDATE web_sessions SET expires_at = 1")
        .execute(&live.state.db.pool)
        .await
        .unwrap();
    b.goto(&url).await;
    b.wait_text("#signin-error", "session expired").await;
    b.screenshot("16-session-expired").await;

    // A forged session cookie is refused the same way.
    b.cmd(
        Method::POST,
        "/cookie",
        Some(
            json!({"cookie": {"name": "kiln_session", "value": "ks_forged", "path": "/",
            "secure": true, "httpOnly": true}}),
        ),
    )
    .await;
    b.goto(&format!("{url}#/tokens")).await;
    b.cmd(Method::POST, "/refresh", Some(json!({}))).await;
    b.wait_text("#signin-error", "unknown or signed-out session")
        .await;
}
