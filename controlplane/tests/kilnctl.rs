//! The built `kilnctl` binary and the served `install.sh` against a live server on
//! 127.0.0.1 (the real TLS listener, CA pinned), playing the agent's part over HTTP where a
//! flow needs one.

mod common;

use common::{Live, ev, post_events};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    #[track_caller]
    fn json(&self) -> Value {
        assert!(self.ok, "kilnctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("-o json is not JSON ({e}): {}", self.stdout))
    }
    #[track_caller]
    fn err(&self) -> &str {
        assert!(!self.ok, "kilnctl should have failed: {}", self.stdout);
        &self.stderr
    }
}

fn kilnctl_cmd(live: &Live, key: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kilnctl"));
    c.args(args)
        .env("KILN_SERVER", &live.url)
        .env("KILN_API_KEY", key)
        .env("KILN_CA_SHA256", &live.pin)
        .env_remove("KILN_CA_CERT")
        .stdin(Stdio::null());
    c
}

/// Runs kilnctl (off the async runtime, the server keeps serving).
async fn kilnctl(live: &Live, key: &str, args: &[&str]) -> Ran {
    let mut c = kilnctl_cmd(live, key, args);
    let out: Output = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn inventory(system_uuid: &str) -> Value {
    json!({"hostname": format!("host-{system_uuid}"), "arch": "x86_64", "cpu_cores": 2,
        "memory_bytes": 1u64 << 30, "system_uuid": system_uuid,
        "disks": [{"name": "vda", "size_bytes": 10u64 << 30, "rotational": false}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kilnctl_main_flows() {
    let live = Live::start().await;
    let admin = live.admin.clone();
    let anon = live.client(None).await;

    // A wrong pin is refused before any request.
    let mut c = kilnctl_cmd(&live, &admin, &["info"]);
    c.env("KILN_CA_SHA256", "00".repeat(32));
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    assert_eq!(
        kilnctl(&live, &admin, &["info", "-o", "json"]).await.json()["ca_sha256"],
        live.pin.as_str()
    );

    // Tokens: every lifetime gives its expiry; an unknown one is refused.
    for (lifetime, secs) in [
        ("10m", 600i64),
        ("1d", 86_400),
        ("7d", 604_800),
        ("365d", 31_536_000),
    ] {
        let now = OffsetDateTime::now_utc();
        let j = kilnctl(
            &live,
            &admin,
            &["token", "create", "--lifetime", lifetime, "-o", "json"],
        )
        .await
        .json();
        let exp = OffsetDateTime::parse(j["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
        let got = (exp - now).whole_seconds();
        assert!((secs - 5..=secs + 5).contains(&got), "{lifetime}: {got} s");
        assert!(
            j["token"].as_str().unwrap().split('.').count() == 5,
            "compact JWE"
        );
    }
    let table = kilnctl(&live, &admin, &["token", "create"]).await;
    assert!(
        table.ok && table.stdout.starts_with("EXPIRES"),
        "{}",
        table.stdout
    );
    let r = kilnctl(&live, &admin, &["token", "create", "--lifetime", "2d"]).await;
    assert!(r.err().contains("2d"), "{}", r.stderr);

    // Images: official ones are listed and flagged, and refuse deletion.
    let official = kilnctl(
        &live,
        &admin,
        &["image", "list", "--filter", "official", "-o", "json"],
    )
    .await
    .json();
    let names: Vec<&str> = official
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{official}");
    assert!(names.contains(&"ubuntu-24.04") && names.contains(&"debian-12"));
    assert!(
        official
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["official"] == true)
    );
    let r = kilnctl(&live, &admin, &["image", "delete", "ubuntu-24.04"]).await;
    assert!(
        r.err().contains("official images are read-only"),
        "{}",
        r.stderr
    );
    for name in ["img-a", "img-b", "img-gone"] {
        let oci = format!("registry.local/{name}:1");
        let j = kilnctl(
            &live,
            &admin,
            &["image", "create", name, "--oci-url", &oci, "-o", "json"],
        )
        .await
        .json();
        assert_eq!(j["official"], false);
    }
    assert!(
        kilnctl(&live, &admin, &["image", "delete", "img-gone"])
            .await
            .ok
    );
    let custom = kilnctl(
        &live,
        &admin,
        &["image", "list", "--filter", "custom", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(custom.as_array().unwrap().len(), 2, "{custom}");

    // Roles: two with an image cannot go on one machine; the error names both.
    for (role, img) in [("web", "img-a"), ("db", "img-b")] {
        let j = kilnctl(
            &live,
            &admin,
            &["role", "create", role, "--image", img, "-o", "json"],
        )
        .await
        .json();
        assert_eq!(j["image_name"], img);
    }
    assert!(
        kilnctl(&live, &admin, &["role", "create", "monitoring"])
            .await
            .ok
    );
    let token = kilnctl(
        &live,
        &admin,
        &["token", "create", "--lifetime", "1d", "-o", "json"],
    )
    .await
    .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let reg = anon
        .call(
            Method::POST,
            "/api/agent/v1/register",
            Some(&json!({"token": token, "inventory": inventory("m-1")})),
        )
        .await
        .unwrap();
    let m1 = reg["machine_uuid"].as_str().unwrap().to_string();
    let agent = anon.with_bearer(reg["credential"].as_str().unwrap().to_string());
    let r = kilnctl(&live, &admin, &["machine", "set-roles", &m1, "web", "db"]).await;
    let err = r.err();
    assert!(err.contains("\"web\"") && err.contains("\"db\""), "{err}");
    let j = kilnctl(
        &live,
        &admin,
        &[
            "machine",
            "set-roles",
            &m1,
            "web",
            "monitoring",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    let mut roles: Vec<&str> = j["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["monitoring", "web"]);

    // Approval by code.
    let pending = anon
        .call(
            Method::POST,
            "/api/agent/v1/register",
            Some(&json!({"inventory": inventory("m-2")})),
        )
        .await
        .unwrap();
    let code = pending["approval_code"].as_str().unwrap();
    let r = kilnctl(&live, &admin, &["machine", "approve", "ABCDE0"]).await;
    assert!(r.err().contains("never contain '0'"), "{}", r.stderr);
    let j = kilnctl(
        &live,
        &admin,
        &[
            "machine",
            "approve",
            &code.to_lowercase(),
            "--role",
            "db",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(j["state"], "approved");
    assert_eq!(j["roles"], json!(["db"]));
    let list = kilnctl(&live, &admin, &["machine", "list"]).await;
    assert!(
        list.ok && list.stdout.lines().count() == 3,
        "{}",
        list.stdout
    );

    // Provisioning: a first run needs no confirmation; the agent completes it.
    let run = kilnctl(&live, &admin, &["provision", "start", &m1, "-o", "json"])
        .await
        .json();
    assert_eq!(run["status"], "queued");
    assert_eq!(run["image_name"], "img-a");
    let run1 = run["id"].as_str().unwrap().to_string();
    post_events(
        &agent,
        &run1,
        vec![
            ev(
                1,
                json!({"type": "step_started", "step": "image_inspection"}),
            ),
            ev(2, json!({"type": "completed"})),
        ],
    )
    .await;
    let runs = kilnctl(&live, &admin, &["provision", "list", &m1, "-o", "json"])
        .await
        .json();
    assert_eq!(runs[0]["status"], "completed");

    // Re-provisioning an installed machine: refused without --yes (no terminal to ask on).
    let r = kilnctl(&live, &admin, &["provision", "start", &m1]).await;
    let err = r.err();
    assert!(err.contains("OVERWRITES ALL DATA"), "{err}");
    assert!(err.contains("run again with --yes"), "{err}");
    let runs = kilnctl(&live, &admin, &["provision", "list", &m1, "-o", "json"])
        .await
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 1, "nothing was started");

    // With --yes it starts; `provision watch` follows it and ends when the run ends.
    let run2 = kilnctl(
        &live,
        &admin,
        &["provision", "start", &m1, "--yes", "-o", "json"],
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let watch = {
        let mut c = kilnctl_cmd(&live, &admin, &["provision", "watch", &run2]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        tokio::task::spawn_blocking(move || {
            let out = child.wait_with_output().unwrap();
            (Instant::now(), out)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    post_events(
        &agent,
        &run2,
        vec![
            ev(
                1,
                json!({"type": "step_started", "step": "bootloader_streaming"}),
            ),
            ev(
                2,
                json!({"type": "progress", "step": "bootloader_streaming", "percent": 40}),
            ),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !watch.is_finished(),
        "watch ended while the run was in progress"
    );
    post_events(&agent, &run2, vec![ev(3, json!({"type": "completed"}))]).await;
    let ended_at = Instant::now();
    let (finished, out) = tokio::time::timeout(Duration::from_secs(15), watch)
        .await
        .expect("provision watch did not end with the run")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(finished.duration_since(ended_at) < Duration::from_secs(5));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Bootloader streaming: started"), "{stdout}");
    assert!(stdout.contains("provisioning completed"), "{stdout}");

    // A failed run makes watch fail with the agent's error.
    let run3 = kilnctl(
        &live,
        &admin,
        &["provision", "start", &m1, "--yes", "-o", "json"],
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    post_events(
        &agent,
        &run3,
        vec![ev(
            1,
            json!({"type": "failed", "error": "disk vda vanished"}),
        )],
    )
    .await;
    let r = kilnctl(&live, &admin, &["provision", "watch", &run3]).await;
    assert!(r.err().contains("disk vda vanished"), "{}", r.stderr);

    // Installer media.
    let r = kilnctl(&live, &admin, &["installer", "ipxe", "--token-ttl", "1d"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("#!ipxe\n") && r.stdout.contains(" kiln.token="),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!(
        "kiln.url={} kiln.ca=sha256:{}",
        live.url, live.pin
    )));
    let iso = live.dir.path().join("downloaded.iso");
    let r = kilnctl(
        &live,
        &admin,
        &["installer", "iso", "--out", iso.to_str().unwrap()],
    )
    .await;
    assert!(
        r.err().contains("scripts/build-iso --template"),
        "{}",
        r.stderr
    );
    assert!(!iso.exists());
    std::fs::create_dir_all(&live.cfg.artifacts_dir).unwrap();
    let mut template = vec![7u8; 10_000];
    let mut ph = format!("#KILN-PARAMS:{}:", kiln_controlplane::iso::PLACEHOLDER_LEN).into_bytes();
    ph.resize(kiln_controlplane::iso::PLACEHOLDER_LEN - 13, b' ');
    ph.extend_from_slice(kiln_controlplane::iso::TAIL);
    template.extend_from_slice(&ph);
    template.extend_from_slice(&[9u8; 500_000]);
    std::fs::write(live.cfg.artifacts_dir.join("kiln.iso"), &template).unwrap();
    let j = kilnctl(
        &live,
        &admin,
        &[
            "installer",
            "iso",
            "--token-ttl",
            "7d",
            "--role",
            "web",
            "--out",
            iso.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(j["size_bytes"], template.len());
    let got = std::fs::read(&iso).unwrap();
    let baked =
        String::from_utf8_lossy(&got[10_000..10_000 + kiln_controlplane::iso::PLACEHOLDER_LEN]);
    assert!(
        baked.starts_with(&format!(
            "kiln.url={} kiln.ca=sha256:{} quiet kiln.token=",
            live.url, live.pin
        )),
        "{baked}"
    );
    let r = kilnctl(&live, &admin, &["installer", "iso", "--role", "web"]).await;
    assert!(r.err().contains("--token-ttl"), "{}", r.stderr);

    // Completions are generated without a server.
    let out = Command::new(env!("CARGO_BIN_EXE_kilnctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kilnctl"));
}

/// The served install.sh, run by bash into a prefix without systemd: installs the agent, CA
/// and agent.json (the agent-config contract of docs/protocol.md); refuses a server whose CA does not match the pin it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_sh_into_a_prefix() {
    let live = Live::start().await;
    std::fs::create_dir_all(&live.cfg.artifacts_dir).unwrap();
    let agent_bin = b"#!/bin/sh\necho fake kiln-agent\n";
    std::fs::write(live.cfg.artifacts_dir.join("kiln-agent"), agent_bin).unwrap();
    let anon = live.client(None).await;
    let script = anon.text("/install.sh").await.unwrap();
    let token = live
        .client(Some(&live.admin))
        .await
        .call(
            Method::POST,
            "/api/bootstrap-tokens",
            Some(&json!({"lifetime": "1d"})),
        )
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let run = |script: String, root: std::path::PathBuf, token: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let mut c = Command::new("bash");
            c.arg("-")
                .env("KILN_ROOT", &root)
                .env_remove("KILN_TOKEN")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(t) = token {
                c.env("KILN_TOKEN", t);
            }
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
    };

    let root = live.dir.path().join("root");
    let out = run(script.clone(), root.clone(), Some(token.clone()))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("not started"), "{stdout}");
    let installed = root.join("usr/local/sbin/kiln-agent");
    assert_eq!(std::fs::read(&installed).unwrap(), agent_bin);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kiln/ca.pem")).unwrap(),
        live.state.settings.ca_pem
    );
    let cfg_file = root.join("etc/kiln/agent.json");
    assert_eq!(
        std::fs::metadata(&cfg_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_file).unwrap()).unwrap();
    assert_eq!(
        cfg,
        json!({"url": live.url, "ca_pin": live.pin, "token": token})
    );
    assert_eq!(
        std::fs::metadata(root.join("etc/kiln"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // No token: refused before anything is fetched.
    let root2 = live.dir.path().join("root2");
    let out = run(script.clone(), root2.clone(), None).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set KILN_TOKEN"));
    assert!(!root2.exists());

    // A server whose CA does not match the pin the script carries (a man in the middle, or
    // a script of another server): refused, nothing installed.
    let wrong = script.replace(&live.pin, &"0".repeat(64));
    assert_ne!(wrong, script);
    let root3 = live.dir.path().join("root3");
    let out = run(wrong, root3.clone(), Some(token)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("the server CA has SHA-256 {}", live.pin))
            && stderr.contains("refusing"),
        "{stderr}"
    );
    assert!(
        !root3.exists(),
        "nothing may be installed after a pin mismatch"
    );
}
