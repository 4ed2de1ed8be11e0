//! The whole product in one VM test: a real `kiln-server` (the binary, TLS with its own CA)
//! and a real docker-registry holding the test image run on 127.0.0.1; the operator uses
//! the real `kilnctl`; the installer boots with a bootstrap token, registers, and carries out
//! the provisioning run the operator starts, kexecs into the installed system, whose
//! injected agent reconnects as the same machine; re-provisioning kexecs back into the
//! installer (served by kiln-server) and round again. The guest reaches both services through slirp
//! (`restrict=on`) guestfwds only: the server at 10.0.2.100:8443, the registry at
//! 10.0.2.101:5000.

mod support;

use anyhow::{Context, Result, ensure};
use kiln_qemu_tests::{Boot, Bus, Firmware, Guest, GuestBuilder, artifacts};
use kiln_testsupport::server;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{GIB, check_provisioned, disk, registry_with, registry_with_test_image, untouched};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(120);
const PROVISION: Duration = Duration::from_secs(900);

/// The address the guest reaches the server at (the certificate is made for it).
const SERVER_IN_GUEST: &str = "10.0.2.100:8443";
const REGISTRY_IN_GUEST: &str = "10.0.2.101:5000";

/// A `kiln-server` process on 127.0.0.1 whose certificate and public URL name the
/// guest-side address and which serves the installer to machines that re-provision; killed
/// on drop.
struct Server(kiln_testsupport::server::Server);

impl Server {
    fn start() -> Result<Server> {
        let options = server::Options {
            tls_names: vec!["10.0.2.100".into(), "127.0.0.1".into()],
            public_url: Some(format!("https://{SERVER_IN_GUEST}")),
            heartbeat_secs: 5,
            artifacts: vec![("vmlinuz".into(), artifacts::installer()?)],
        };
        Ok(Server(server::Server::start(&options)?))
    }

    /// Runs `kilnctl ARGS -o json` as the admin; the parsed output.
    fn kilnctl(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(server::binary("kilnctl")?)
            .args(args)
            .args(["-o", "json"])
            .env("KILN_SERVER", &self.0.url)
            .env("KILN_API_KEY", &self.0.admin)
            .env("KILN_CA_SHA256", &self.0.pin)
            .env_remove("KILN_CA_CERT")
            .stdin(Stdio::null())
            .output()
            .context("running kilnctl")?;
        ensure!(
            out.status.success(),
            "kilnctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("kilnctl {args:?} printed no JSON"))
    }
}

impl std::ops::Deref for Server {
    type Target = server::Server;
    fn deref(&self) -> &server::Server {
        &self.0
    }
}

/// Polls `f` every second until it returns `Some`, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        ensure!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[ignore = "vm: boots QEMU, starts kiln-server and docker-registry (scripts/test vm)"]
fn vm_token_boot_registers_and_provisions_by_operator_order() -> Result<()> {
    let name = "control-plane";
    let reg = registry_with_test_image()?;
    let server = Server::start()?;
    let result = run(name, &server, reg.port);
    if result.is_err() {
        eprintln!("[{name}] kiln-server log:\n{}", server.log());
    }
    result
}

/// The operator's side, with kilnctl: image `image` at `image_ref`, a role `web` using it
/// with `user_data`, and a one-day bootstrap token that assigns the role.
fn operator_setup(
    server: &Server,
    image: &str,
    image_ref: &str,
    user_data: &str,
    tmp: &Path,
) -> Result<String> {
    server.kilnctl(&["image", "create", image, "--oci-url", image_ref])?;
    let file = tmp.join("user-data");
    std::fs::write(&file, user_data)?;
    server.kilnctl(&[
        "role",
        "create",
        "web",
        "--image",
        image,
        "--user-data",
        file.to_str().context("path")?,
    ])?;
    let token = server.kilnctl(&["token", "create", "--lifetime", "1d", "--role", "web"])?;
    Ok(token["token"].as_str().context("token")?.to_string())
}

/// The installer booted with the bootstrap token, the disks (path, serial) and a NIC whose
/// only ways out are the guestfwds to the server and the registry; disk hint
/// `serial=KILN-TARGET`.
fn installer(
    name: &str,
    server: &Server,
    registry_port: u16,
    token: &str,
    disks: &[(&Path, &str)],
) -> Result<Guest> {
    // `quiet`, as kiln-server's baked ISO and iPXE script have with a token: the kernel
    // prints its command line on the console otherwise.
    let append = format!(
        "console=ttyS0,115200 panic=-1 quiet kiln.url=https://{SERVER_IN_GUEST} kiln.ca={pin} \
         kiln.token={token} kiln.insecure-registry={REGISTRY_IN_GUEST} \
         kiln.disk=serial=KILN-TARGET",
        pin = server.pin
    );
    let mut b = GuestBuilder::new(
        name,
        Boot::Kernel {
            kernel: artifacts::bare_kernel()?,
            initrd: Some(artifacts::initramfs()?),
            append,
        },
    )
    .memory_mib(1024);
    for (path, serial) in disks {
        b = b.disk(path, Bus::Virtio, serial);
    }
    b.forwarded_nic(&[
        (SERVER_IN_GUEST, server.port),
        (REGISTRY_IN_GUEST, registry_port),
    ])
    .start()
}

/// The machine the token registered (the only one), after the installer said so.
fn registered_machine(g: &mut Guest, server: &Server) -> Result<Value> {
    let registered = g.expect("registered with ", BOOT)?;
    ensure!(registered.contains("(token)"), "{registered}");
    let machines = server.kilnctl(&["machine", "list"])?;
    machines
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .context("no machine registered")
}

/// Polls run `run` until it is completed or failed.
fn run_result(server: &Server, run: &str) -> Result<Value> {
    wait_for(&format!("run {run} to end"), PROVISION, || {
        let r = server.kilnctl(&["provision", "get", run])?;
        Ok(matches!(r["status"].as_str(), Some("completed" | "failed")).then_some(r))
    })
}

fn run(name: &str, server: &Server, registry_port: u16) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let token = operator_setup(
        server,
        "kiln-test",
        &format!("{REGISTRY_IN_GUEST}/kiln/test:latest"),
        "#cloud-config\nhostname: kiln-e2e\n",
        tmp.path(),
    )?;
    let size = 3 * GIB;
    let target = disk(tmp.path(), "target.img", size, None)?;
    let decoy = disk(tmp.path(), "decoy.img", 2 * GIB, Some(0xA5))?;
    let mut g = installer(
        name,
        server,
        registry_port,
        &token,
        &[(&decoy, "KILN-DECOY"), (&target, "KILN-TARGET")],
    )?;
    g.check(|g| {
        // The machine is approved by the token, with the token's role.
        let m = registered_machine(g, server)?;
        ensure!(m["state"] == "approved", "{m}");
        ensure!(m["roles"] == serde_json::json!(["web"]), "{m}");
        let id = m["id"].as_str().context("machine id")?.to_string();
        let disks = m["inventory"]["disks"].to_string();
        ensure!(disks.contains("KILN-TARGET"), "inventory: {disks}");

        // The operator provisions; the agent carries it out and reports every step.
        let run = server.kilnctl(&["provision", "start", &id])?;
        let run_id = run["id"].as_str().context("run id")?.to_string();
        g.expect("order provision", STEP)?;
        let done = run_result(server, &run_id)?;
        ensure!(done["status"] == "completed", "run: {done}");
        ensure!(done["percent"] == 100, "run: {done}");
        let m = server.kilnctl(&["machine", "get", &id])?;
        ensure!(m["state"] == "installed", "machine after the run: {m}");

        // The installer kexecs into the installed system; its injected agent reconnects
        // with the credential provisioning gave it and heartbeats as "installed".
        let line = g.expect("kexec: booting", STEP)?;
        ensure!(line.contains("console=ttyS0"), "{line}");
        g.expect("kiln-test-image: booted", BOOT)?;
        g.expect(&format!("installed system: machine {id}"), BOOT)?;
        let m = wait_for("a heartbeat from the installed system", STEP, || {
            let m = server.kilnctl(&["machine", "get", &id])?;
            Ok((m["environment"] == "installed").then_some(m))
        })?;
        ensure!(
            m["state"] == "installed",
            "machine in its installed system: {m}"
        );

        // Re-provisioning: the installed agent downloads the installer from the server and
        // kexecs into it as the same machine; the installer carries out the new run and
        // kexecs into the freshly installed system again.
        let run = server.kilnctl(&["provision", "start", &id, "--yes"])?;
        let run2 = run["id"].as_str().context("run id")?.to_string();
        g.expect(&format!("re-provisioning (run {run2})"), STEP)?;
        let line = g.expect("kexec: booting", STEP)?;
        ensure!(
            line.contains("kiln.credential=<redacted>")
                && line.contains(&format!("kiln.machine={id}")),
            "{line}"
        );
        g.expect("running as pid 1", BOOT)?;
        g.expect(&format!("order provision: run {run2}"), STEP)?;
        let done = run_result(server, &run2)?;
        ensure!(done["status"] == "completed", "second run: {done}");
        g.expect("kiln-test-image: booted", BOOT)?;
        g.expect(&format!("installed system: machine {id}"), BOOT)?;
        let machines = server.kilnctl(&["machine", "list"])?;
        ensure!(
            machines.as_array().map(Vec::len) == Some(1),
            "re-provisioning registered a second machine: {machines}"
        );
        let text = g.serial_text();
        ensure!(!text.contains(&token), "the token reached the console");
        Ok(())
    })?;
    drop(g);
    let seen = check_provisioned(&target, size)
        .with_context(|| format!("checking {} from the host", target.display()))?;
    eprintln!("[{name}] {}: {seen}", target.display());
    untouched(&decoy, 2 * GIB, Some(0xA5))?;
    Ok(())
}

/// The Debian 12 image's OCI layout (scripts/build-debian-image, cached).
fn debian_image() -> Result<PathBuf> {
    let script = artifacts::workspace().join("scripts/build-debian-image");
    let out = Command::new(&script)
        .arg("--path")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "no cached Debian 12 image: run scripts/build-debian-image (scripts/test root does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The role's user-data of the Debian test: a greeting from runcmd (once per instance), and
/// a unit that prints, at the end of every start-up, the system state and the failed units
/// (`systemctl --failed`) on the serial console, after a `sync`: the test then cuts the
/// power, and what the first boot made (SSH host keys) must be on the disk.
const DEBIAN_USER_DATA: &str = r#"#cloud-config
hostname: kiln-debian
write_files:
  - path: /usr/local/sbin/kiln-boot-report
    permissions: '0755'
    content: |
      #!/bin/sh
      while systemctl is-system-running | grep -q -e starting -e initializing; do sleep 1; done
      sync
      echo "KILN-BOOT-DONE $(systemctl is-system-running) failed=[$(systemctl --failed --plain --no-legend | cut -d' ' -f1 | xargs)]" > /dev/ttyS0
  - path: /etc/systemd/system/kiln-boot-report.service
    content: |
      [Unit]
      Description=Report the end of start-up on ttyS0 (Kiln VM test)
      [Service]
      Type=oneshot
      RemainAfterExit=yes
      ExecStart=/bin/sh -c '/usr/local/sbin/kiln-boot-report &'
      [Install]
      WantedBy=multi-user.target
runcmd:
  - [sh, -c, 'echo KILN-RUNCMD-$(hostname) > /dev/ttyS0']
  - [systemctl, enable, kiln-boot-report.service]
  - [systemctl, start, --no-block, kiln-boot-report.service]
"#;

/// The end-of-start-up line of [`DEBIAN_USER_DATA`]: the system must be `running` (not
/// `degraded`) with no failed unit.
fn check_boot_report(g: &mut Guest, name: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let line = g.expect("KILN-BOOT-DONE", timeout)?;
    eprintln!("[{name}] {line} ({:.1?})", started.elapsed());
    ensure!(
        line.contains("KILN-BOOT-DONE running failed=[]"),
        "start-up ended with failed units: {line}"
    );
    Ok(())
}

/// A real Debian 12 (systemd, cloud-init, openssh-server, its own kernel and initrd)
/// provisioned through the control plane: the installer kexecs into Debian's kernel, real
/// cloud-init runs the role's user-data from the NoCloud seed, and the agent injected as a
/// systemd service reconnects; no unit fails. Then the disk boots cold through the
/// firmware, under SeaBIOS and under OVMF, with no installer present: Debian comes up with
/// no failed unit and cloud-init does not run the user-data again.
#[test]
#[ignore = "vm: boots QEMU with the Debian 12 image (scripts/build-debian-image), kiln-server, docker-registry (scripts/test vm)"]
fn vm_debian_image_runs_the_roles_cloud_init() -> Result<()> {
    const DEBIAN_BOOT: Duration = Duration::from_secs(900);
    let name = "debian-cloud-init";
    let reg = registry_with(&debian_image()?, "bookworm", "kiln/debian:12")?;
    let server = Server::start()?;
    let tmp = tempfile::tempdir()?;
    let result = (|| -> Result<()> {
        let token = operator_setup(
            &server,
            "debian-12-lab",
            &format!("{REGISTRY_IN_GUEST}/kiln/debian:12"),
            DEBIAN_USER_DATA,
            tmp.path(),
        )?;
        let size = 4 * GIB;
        let target = disk(tmp.path(), "target.img", size, None)?;
        let mut g = installer(name, &server, reg.port, &token, &[(&target, "KILN-TARGET")])?;
        g.check(|g| {
            let m = registered_machine(g, &server)?;
            let id = m["id"].as_str().context("machine id")?.to_string();
            let run = server.kilnctl(&["provision", "start", &id])?;
            let run_id = run["id"].as_str().context("run id")?.to_string();
            let done = run_result(&server, &run_id)?;
            ensure!(done["status"] == "completed", "run: {done}");
            let line = g.expect("kexec: booting", STEP)?;
            ensure!(
                line.contains("initrd"),
                "Debian boots with its initrd: {line}"
            );
            let started = Instant::now();
            g.expect("KILN-RUNCMD-kiln-debian", DEBIAN_BOOT)?;
            eprintln!(
                "[{name}] kexec -> cloud-init runcmd: {:.1?}",
                started.elapsed()
            );
            let m = wait_for("a heartbeat from Debian's agent", DEBIAN_BOOT, || {
                let m = server.kilnctl(&["machine", "get", &id])?;
                Ok((m["environment"] == "installed").then_some(m))
            })?;
            ensure!(m["state"] == "installed", "machine in Debian: {m}");
            eprintln!(
                "[{name}] kexec -> agent heartbeat: {:.1?}",
                started.elapsed()
            );
            check_boot_report(g, name, DEBIAN_BOOT)
        })?;
        drop(g);
        for firmware in [Firmware::SeaBios, Firmware::Ovmf] {
            cold_boot(
                &format!("{name}-{firmware:?}"),
                firmware,
                &target,
                &server,
                reg.port,
            )?;
        }
        Ok(())
    })();
    if result.is_err() {
        eprintln!("[{name}] kiln-server log:\n{}", server.log());
    }
    result
}

/// The provisioned disk `target` booted through `firmware` with no installer: Debian's own
/// boot loader, no failed unit, and the role's runcmd not run again (once per instance).
fn cold_boot(
    name: &str,
    firmware: Firmware,
    target: &Path,
    server: &Server,
    registry_port: u16,
) -> Result<()> {
    let mut g = GuestBuilder::new(name, Boot::Disk)
        .firmware(firmware)
        .memory_mib(1024)
        .disk(target, Bus::Virtio, "KILN-TARGET")
        .forwarded_nic(&[
            (SERVER_IN_GUEST, server.port),
            (REGISTRY_IN_GUEST, registry_port),
        ])
        .start()?;
    g.check(|g| {
        check_boot_report(g, name, Duration::from_secs(900))?;
        ensure!(
            !g.serial_text().contains("KILN-RUNCMD"),
            "cloud-init ran the user-data again on a cold boot"
        );
        Ok(())
    })
}
