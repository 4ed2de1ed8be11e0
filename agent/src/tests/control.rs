//! Root tests of the control-plane client: a REAL `kiln-server` (the binary, built by
//! `scripts/test root` or `cargo build -p kiln-controlplane --bin kiln-server`) on 127.0.0.1
//! with its data in a temp dir ([`kiln_testsupport::server`]), a real docker-registry
//! holding a test image, and a loop device. The agent runs the same [`connect`] loop PID 1
//! and `kiln-agent serve` run, in a thread.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use kiln_testsupport::registry;
use serde_json::{Value, json};

use super::provision::{check_grown, layers_for_boot};
use super::{Loop, serial, sh};
use crate::control::boot::NoKexec;
use crate::control::config::Config;
use crate::control::session::Hooks;
use crate::control::{connect, inventory, trust};
use crate::events::tests::Collect;
use crate::events::{Event, Reporter};
use crate::provision::gpt::testimg;
use crate::provision::inject::AgentConfig;

/// A kiln-server and an admin client that trusts it the way the agent does (CA pin).
struct Server {
    server: kiln_testsupport::server::Server,
    url: String,
    pin: String,
    http: ureq::Agent,
}

impl Server {
    fn start() -> Server {
        let server =
            kiln_testsupport::server::Server::start(&Default::default()).expect("kiln-server");
        let (url, pin) = (server.url.clone(), server.pin.clone());
        // The test's own client trusts the server the way the agent does.
        let tls = trust::establish(&url, Some(&pin), &server.dir().join("test-ca.pem"))
            .unwrap()
            .unwrap();
        let http = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout(Duration::from_secs(30))
            .build();
        Server {
            server,
            url,
            pin,
            http,
        }
    }

    /// An admin API call: (status, JSON body).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = self
            .http
            .request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.server.admin));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    #[track_caller]
    fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (s, v) = self.call(method, path, body);
        assert_eq!(s, status, "{method} {path}: {v}");
        v
    }

    fn log(&self) -> String {
        self.server.log()
    }
}

/// Hooks for tests: never reboots, stops after `orders` orders.
fn hooks(orders: usize) -> Hooks {
    Hooks {
        boot: Arc::new(NoKexec),
        reboot: Arc::new(|why| anyhow::anyhow!("test: would reboot ({why})")),
        boot_after_provision: false,
        provision_via_installer: false,
        claim_poll: Duration::from_millis(200),
        inventory: Arc::new(inventory::collect),
        max_orders: Some(orders),
    }
}

/// Runs the agent on a thread; the receiver gets its result.
fn spawn_agent(
    mut cfg: Config,
    hooks: Hooks,
) -> (Collect, mpsc::Receiver<(anyhow::Result<()>, Config)>) {
    let reporter = Arc::new(Reporter::new());
    let c = Collect::default();
    reporter.add_sink(Box::new(c.clone()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = connect(&mut cfg, reporter, &hooks);
        let _ = tx.send((r, cfg));
    });
    (c, rx)
}

fn events(c: &Collect) -> Vec<Event> {
    c.0.lock()
        .unwrap()
        .iter()
        .map(|r| r.event.clone())
        .collect()
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test image (raw disk with GPT as layer 0, a rootfs layer with systemd and a kernel)
/// pushed to `reg`; returns its reference.
fn push_test_image(reg: &registry::Registry, work: &Path) -> String {
    use kiln_oci::builder::{BuildSpec, LayerCompression, build};
    use kiln_oci::format::{Layer0Form, keys};
    let disk = work.join("disk.raw");
    std::fs::write(&disk, testimg::make(64 << 20, 512)).unwrap();
    let rootfs = work.join("rootfs.tar");
    std::fs::write(&rootfs, &layers_for_boot()[0]).unwrap();
    let image = build(&BuildSpec {
        disk,
        layer0_form: Layer0Form::RawDisk,
        rootfs: Some(rootfs),
        annotations: vec![(keys::ROOT_LABEL.into(), "img-root".into())],
        layer_compression: LayerCompression::Gzip,
        zstd_level: 1,
        work_dir: work.join("build"),
    })
    .unwrap();
    let reference = format!("{}/kiln/agent-test:latest", reg.host());
    image
        .push(
            &registry::client_for(&[&reg.host()], None),
            &reference.parse().unwrap(),
        )
        .unwrap();
    reference
}

#[test]
#[ignore = "root: kiln-server, docker-registry, loop device, mkfs, mount"]
fn root_agent_registers_with_token_and_provisions_loop_disk() {
    let _serial = serial();
    let lo = Loop::new(1 << 30);
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let reg = registry::Registry::start(registry::Auth::None);
    let reference = push_test_image(&reg, t.path());
    let srv = Server::start();
    srv.expect(
        "POST",
        "/api/images",
        Some(json!({"name": "agent-test", "oci_url": reference})),
        201,
    );
    let user_data = "#cloud-config\nruncmd:\n- [echo, provisioned-by-kiln]\n";
    srv.expect(
        "POST",
        "/api/roles",
        Some(json!({"name": "web", "image": "agent-test", "user_data": user_data})),
        201,
    );
    let token = srv.expect(
        "POST",
        "/api/bootstrap-tokens",
        Some(json!({"roles": ["web"]})),
        201,
    )["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Daemon mode: the installed-system config, as install.sh writes it.
    let cfg_path = t.path().join("etc-kiln/agent.json");
    std::fs::create_dir_all(cfg_path.parent().unwrap()).unwrap();
    let file = json!({"url": srv.url, "ca_pin": srv.pin, "token": token,
        "disk": format!("name={}", lo.name()), "insecure_registries": [reg.host()]});
    std::fs::write(&cfg_path, file.to_string()).unwrap();
    let mut cfg = Config::from_file(&file.to_string(), &cfg_path).unwrap();
    cfg.work_dir = t.path().join("work");
    let (collected, done) = spawn_agent(cfg, hooks(1));

    // Registered at once with the token: the machine exists, approved, with role web.
    let machine = wait_for("the machine to register", 60, || {
        let (_, list) = srv.call("GET", "/api/machines", None);
        list.as_array()?.first().cloned()
    });
    let m = machine["id"].as_str().unwrap().to_string();
    assert_eq!(machine["roles"], json!(["web"]));
    let run = srv.expect(
        "POST",
        &format!("/api/machines/{m}/provision"),
        // The daemon heartbeats as an installed system: the server wants a confirmation.
        Some(json!({"confirm_overwrite": true})),
        201,
    );
    let run_id = run["id"].as_str().unwrap().to_string();
    let (result, cfg) = done
        .recv_timeout(Duration::from_secs(600))
        .expect("the agent finished its order");
    result.unwrap();

    let run = srv.expect("GET", &format!("/api/runs/{run_id}"), None, 200);
    assert_eq!(run["status"], "completed", "{run:#}\n{}", srv.log());
    assert_eq!(run["percent"], 100);
    // Every step started and completed, in order; percent never decreased; completed last.
    let evs: Vec<Value> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    let seqs: Vec<u64> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let of = |ty: &str| -> Vec<String> {
        evs.iter()
            .filter(|e| e["type"] == ty)
            .map(|e| e["step"].as_str().unwrap().to_string())
            .collect()
    };
    let all: Vec<String> = kiln_protocol::Step::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(of("step_started"), all, "{evs:#?}");
    assert_eq!(of("step_completed"), all, "{evs:#?}");
    let percents: Vec<u64> = evs
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["percent"].as_u64().unwrap())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    assert_eq!(evs.last().unwrap()["type"], "completed");

    let machine = srv.expect("GET", &format!("/api/machines/{m}"), None, 200);
    assert_eq!(machine["state"], "installed");
    assert_eq!(machine["environment"], "installed", "heartbeat environment");

    // The loop disk holds the image, grown; its root has the seed and the injected agent.
    check_grown(&lo.dev, 1 << 30);
    let dev = lo.dev.display().to_string();
    let label = sh(
        "blkid",
        &["-s", "LABEL", "-o", "value", &format!("{dev}p3")],
    );
    assert_eq!(label.trim(), "img-root");
    let mnt = t.path().join("check");
    std::fs::create_dir_all(&mnt).unwrap();
    sh("mount", &[&format!("{dev}p3"), mnt.to_str().unwrap()]);
    let read = |p: &str| std::fs::read_to_string(mnt.join(p));
    let injected = read("etc/kiln/agent.json");
    let seed = read("var/lib/cloud/seed/nocloud/user-data");
    let unit = read("etc/systemd/system/kiln-agent.service");
    sh("umount", &[mnt.to_str().unwrap()]);
    let injected: AgentConfig = serde_json::from_str(&injected.unwrap()).unwrap();
    let saved = cfg.identity.clone().expect("identity kept");
    assert_eq!(injected.url, srv.url);
    assert_eq!(injected.ca_pin.as_deref(), Some(srv.pin.as_str()));
    assert_eq!(injected.machine_id, m);
    assert_eq!(injected.credential, saved.credential.expose());
    assert!(
        injected.token.is_none(),
        "the bootstrap token is not installed"
    );
    assert_eq!(seed.unwrap(), user_data);
    assert!(unit.unwrap().contains("kiln-agent serve"));
    // install.sh's file got the identity written back, without the token.
    let back: AgentConfig =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    assert_eq!(back.machine_id, m);
    assert!(back.token.is_none());

    // Secrets never reach an event.
    let text: String = events(&collected)
        .iter()
        .map(|e| format!("{e}\n{e:?}\n"))
        .collect();
    assert!(text.contains("registered with"), "{text}");
    for secret in [saved.credential.expose(), token.as_str()] {
        assert!(!text.contains(secret), "a secret in the events:\n{text}");
    }
}

#[test]
#[ignore = "root: kiln-server"]
fn root_agent_approval_code_path() {
    let srv = Server::start();
    let state = tempfile::tempdir().unwrap();
    // The installer's path: kernel command line, identity kept in the state dir.
    let settings = crate::cmdline::Settings::parse(&format!(
        "kiln.url={} kiln.ca=sha256:{}",
        srv.url, srv.pin
    ))
    .settings;
    let cfg = Config::from_cmdline(&settings, state.path(), None)
        .unwrap()
        .unwrap();
    let (collected, done) = spawn_agent(cfg, hooks(0));
    let code = wait_for("the approval code", 60, || {
        events(&collected).iter().find_map(|e| match e {
            Event::ApprovalCode { code, .. } => Some(code.clone()),
            _ => None,
        })
    });
    assert_eq!(code.len(), 6);
    let m = srv.expect(
        "POST",
        "/api/machines/approve",
        Some(json!({"code": code})),
        200,
    );
    assert_eq!(m["state"], "approved");
    let (result, cfg) = done
        .recv_timeout(Duration::from_secs(60))
        .expect("the agent got its credential");
    result.unwrap();
    let id = cfg.identity.expect("registered");
    assert_eq!(id.machine_uuid.to_string(), m["id"].as_str().unwrap());
    assert!(id.credential.expose().starts_with("kmc_"));
    let evs = events(&collected);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Registered { via, .. } if via == "approval code")),
        "{evs:?}"
    );
    // Kept for a retry of the supervisor: the same identity, no second registration.
    let saved = std::fs::read_to_string(state.path().join("agent.json")).unwrap();
    let again = Config::from_cmdline(&settings, state.path(), Some(&saved))
        .unwrap()
        .unwrap();
    assert_eq!(again.identity.as_ref(), Some(&id));
    let text: String = evs.iter().map(|e| format!("{e}\n{e:?}\n")).collect();
    assert!(!text.contains(id.credential.expose()), "{text}");
    assert!(!text.contains("kcs_"), "claim secret in events: {text}");
}

#[test]
#[ignore = "root: kiln-server, docker-registry"]
fn root_agent_reports_bad_image_reference_as_failed() {
    let reg = registry::Registry::start(registry::Auth::None);
    let srv = Server::start();
    let reference = format!("{}/kiln/no-such-image:latest", reg.host());
    srv.expect(
        "POST",
        "/api/images",
        Some(json!({"name": "missing", "oci_url": reference})),
        201,
    );
    srv.expect(
        "PUT",
        "/api/account/settings",
        Some(json!({"default_image": "missing"})),
        200,
    );
    let token = srv.expect("POST", "/api/bootstrap-tokens", Some(json!({})), 201)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("agent.json");
    let file = json!({"url": srv.url, "ca_pin": srv.pin, "token": token,
        "insecure_registries": [reg.host()]})
    .to_string();
    let mut cfg = Config::from_file(&file, &path).unwrap();
    cfg.work_dir = t.path().join("work");
    let (_collected, done) = spawn_agent(cfg, hooks(1));
    let m = wait_for("the machine to register", 60, || {
        let (_, list) = srv.call("GET", "/api/machines", None);
        list.as_array()?.first()?["id"].as_str().map(String::from)
    });
    let run = srv.expect(
        "POST",
        &format!("/api/machines/{m}/provision"),
        // The daemon heartbeats as an installed system: the server wants a confirmation.
        Some(json!({"confirm_overwrite": true})),
        201,
    );
    let (result, _) = done
        .recv_timeout(Duration::from_secs(300))
        .expect("the agent finished its order");
    result.unwrap();
    let run = srv.expect(
        "GET",
        &format!("/api/runs/{}", run["id"].as_str().unwrap()),
        None,
        200,
    );
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains(&reference), "{error}");
    assert_eq!(
        run["current_step"], "image_inspection",
        "failed in the step it was in"
    );
    let machine = srv.expect("GET", &format!("/api/machines/{m}"), None, 200);
    assert_eq!(machine["state"], "failed");
}
