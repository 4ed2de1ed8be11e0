//! Network bring-up in the installer (issue 3), end to end under QEMU: the agent as PID 1
//! configures the guest's NICs and reports each step as a plain line on the serial console
//! (`NetEvent`'s Display, see agent/src/network/events.rs).
//!
//! - One NIC on QEMU user networking (slirp's own DHCP server): the lease, and the time from
//!   kernel start to "address applied" (printed as a `TIMING` line).
//! - Two NICs, the first without link (`set_link off` before the CPU starts): the other one
//!   is used.
//! - Two NICs on two slirp networks: `BOOTIF=` naming the second one wins.
//! - No NIC at all: a clear error on the console, retried.
//! - Static `ip=` in a network namespace with no DHCP server at all: the address works (an
//!   SNTP responder on the namespace's side answers, the guest clock moves).
//! - A network namespace with a bridge, a tap for the guest, a REAL dnsmasq and an SNTP
//!   responder; the guest RTC starts in 2001: address, routes, MTU, DNS, search list and
//!   NTP come from dnsmasq, the clock moves ~25 years; checked in a shell on the guest.
//!
//! User networking is always `restrict=on`; the namespace tests run QEMU inside the
//! namespace they create (`ip netns exec`), so no packet leaves it. Needs root for those.
//!
//! Run: `cargo test -p kiln-qemu-tests --test network -- --ignored vm_net --test-threads=1`

use anyhow::{Context as _, Result, bail, ensure};
use kiln_qemu_tests::{Boot, Guest, GuestBuilder, artifacts, is_agent_line};
use std::fs::File;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(120);
const BASE: &str = "console=ttyS0,115200 panic=-1 kiln.debug";
const MAC0: &str = "52:54:00:12:34:56";
const MAC1: &str = "52:54:00:12:34:57";

fn kernel_boot(extra: &str) -> Result<Boot> {
    Ok(Boot::Kernel {
        kernel: artifacts::bare_kernel()?,
        initrd: Some(artifacts::initramfs()?),
        append: format!("{BASE} {extra}"),
    })
}

/// A virtio NIC on slirp (`restrict=on`: the guest reaches nothing but slirp itself).
fn slirp_nic(id: &str, mac: &str, net: &str) -> [String; 4] {
    [
        "-netdev".into(),
        format!("user,id={id},restrict=on,net={net}"),
        "-device".into(),
        format!("virtio-net-pci,netdev={id},mac={mac}"),
    ]
}

/// Waits for the `address ...` line of `ifname`; prints the boot-to-network time.
fn address_applied(g: &mut Guest, test: &str, ifname: &str, want: &str) -> Result<String> {
    let line = g.expect(&format!("{ifname}: address "), BOOT)?;
    ensure!(
        line.contains(&format!("{ifname}: address {want}")),
        "expected {ifname}: address {want}: {line}"
    );
    let secs = line
        .rsplit_once(" (")
        .and_then(|(_, t)| t.strip_suffix(" s after kernel start)"))
        .with_context(|| format!("no time since kernel start in {line:?}"))?;
    let accel = if kiln_qemu_tests::kvm_works() {
        "KVM"
    } else {
        "TCG"
    };
    eprintln!(
        "TIMING {test}: kernel start -> address applied {secs} s ({accel}; QEMU start -> line seen {:.1} s)",
        g.elapsed().as_secs_f64()
    );
    Ok(line)
}

/// The agent's event lines (`[    4.264] ...`: milliseconds), without the kernel's log
/// (`[    3.985835] ...`: microseconds; it says "eth0" too) or the shell's output.
fn agent_lines(g: &Guest) -> Vec<String> {
    g.serial_text()
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| is_agent_line(l))
        .collect()
}

fn no_line_contains(g: &mut Guest, needle: &str) -> Result<()> {
    let hits: Vec<String> = agent_lines(g)
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect();
    if !hits.is_empty() {
        g.fail();
        bail!("unexpected {needle:?} on the console: {hits:?}");
    }
    Ok(())
}

fn poweroff(g: &mut Guest) -> Result<()> {
    g.type_line("poweroff")?;
    g.expect("poweroff: typed on /dev/ttyS0", STEP)?;
    let status = g.wait_exit(STEP)?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_net_one_nic_gets_slirp_lease() -> Result<()> {
    let mut g = GuestBuilder::new("net-one-nic", kernel_boot("")?)
        .args(slirp_nic("n0", MAC0, "10.0.2.0/24"))
        .start()?;
    g.check(|g| {
        g.expect("eth0: link up", BOOT)?;
        g.expect("eth0: DHCP discover", STEP)?;
        g.expect("eth0: DHCP offer of 10.0.2.15 from 10.0.2.2", STEP)?;
        g.expect("eth0: DHCP ack 10.0.2.15 from 10.0.2.2", STEP)?;
        // With restrict=on slirp offers neither a router nor DNS servers (libslirp's
        // bootp.c leaves options 3 and 6 out): no route, an empty resolv.conf.
        address_applied(g, "one NIC, slirp DHCP", "eth0", "10.0.2.15/24, 0 routes")?;
        g.expect("DNS servers none", STEP)?;
        // slirp offers no NTP server and none is given: the clock is left alone, said so.
        g.expect("clock not set: ", STEP)?;
        g.expect("nothing more to do", STEP)?;
        poweroff(g)
    })
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_net_two_nics_one_without_link_uses_the_other() -> Result<()> {
    // eth0 has no link (its cable is "pulled" before the CPU starts); eth1 works.
    let mut g = GuestBuilder::new("net-no-link", kernel_boot("")?)
        .args(slirp_nic("dead", MAC0, "10.0.3.0/24"))
        .args(slirp_nic("n1", MAC1, "10.0.2.0/24"))
        .paused(true)
        .start()?;
    g.qmp(
        "set_link",
        serde_json::json!({ "name": "dead", "up": false }),
    )?;
    g.qmp("cont", serde_json::json!({}))?;
    g.check(|g| {
        g.expect("eth1: link up", BOOT)?;
        g.expect("eth0: no link", STEP)?;
        g.expect("eth1: DHCP ack 10.0.2.15 from 10.0.2.2", STEP)?;
        address_applied(g, "two NICs, one without link", "eth1", "10.0.2.15/24")?;
        g.expect("nothing more to do", STEP)?;
        no_line_contains(g, "eth0: DHCP")?;
        no_line_contains(g, "eth0: address")
    })
}

/// Both NICs have link and a DHCP server; `param` names the second one (10.0.3.0/24).
fn named_nic_wins(name: &str, param: &str) -> Result<()> {
    let mut g = GuestBuilder::new(name, kernel_boot(param)?)
        .args(slirp_nic("n0", MAC0, "10.0.2.0/24"))
        .args(slirp_nic("n1", MAC1, "10.0.3.0/24"))
        .start()?;
    g.check(|g| {
        g.expect("eth1: using this lease (named by BOOTIF/kiln.ifname)", BOOT)?;
        address_applied(g, param, "eth1", "10.0.3.15/24")?;
        g.expect("nothing more to do", STEP)?;
        no_line_contains(g, "eth0: address")?;
        // Both raced; if eth0 got a lease before it was cancelled, it was given back.
        let lines = agent_lines(g);
        if lines.iter().any(|l| l.contains("eth0: DHCP ack")) {
            ensure!(
                lines
                    .iter()
                    .any(|l| l.contains("eth0: DHCP release of unused 10.0.2.15 to 10.0.2.2")),
                "eth0's unused lease was not released"
            );
        }
        Ok(())
    })
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_net_bootif_selects_the_named_nic() -> Result<()> {
    // pxelinux's IPAPPEND 2 form.
    named_nic_wins(
        "net-bootif",
        &format!("BOOTIF=01-{}", MAC1.replace(':', "-")),
    )
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_net_bootif_ipxe_plain_mac_selects_the_named_nic() -> Result<()> {
    // iPXE's ${netX/mac}.
    named_nic_wins("net-bootif-ipxe", &format!("BOOTIF={MAC1}"))
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_net_kiln_ifname_mac_selects_the_named_nic() -> Result<()> {
    named_nic_wins("net-kiln-ifname", &format!("kiln.ifname={MAC1}"))
}

#[test]
#[ignore = "vm: boots QEMU (scripts/test vm)"]
fn vm_net_no_nic_is_a_clear_error() -> Result<()> {
    let mut g = GuestBuilder::new("net-no-nic", kernel_boot("")?).start()?;
    g.check(|g| {
        let line = g.expect("FAILED: ", BOOT)?;
        ensure!(
            line.contains(
                "ERROR: FAILED: bringing up the network: no Ethernet interface found \
                 (is the NIC driver in the installer kernel?) (retrying in 5 s)"
            ),
            "{line}"
        );
        // The agent tries again (a NIC may still show up) and stays reachable meanwhile.
        g.expect(
            "FAILED: bringing up the network: no Ethernet interface found",
            STEP,
        )?;
        poweroff(g)
    })
}

// ---- network namespace fixtures ----

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace holding bridge `br0` (10.99.0.1/24) with tap `kt0` on it for the
/// guest. Deleted, with its links, on drop.
struct Netns {
    name: String,
}

const HOST_IP: &str = "10.99.0.1";
const TAP: &str = "kt0";

impl Netns {
    fn new() -> Result<Netns> {
        let name = format!(
            "kiln-vm{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", "br0", "type", "bridge", "forward_delay", "0"])?;
        ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ns.ip(&["link", "set", TAP, "master", "br0"])?;
        ns.ip(&["link", "set", TAP, "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A guest running inside this namespace with one NIC on the tap.
    fn guest(&self, name: &str, boot: Boot) -> GuestBuilder {
        GuestBuilder::new(name, boot)
            .wrap(["ip", "netns", "exec", &self.name])
            .args([
                "-netdev".to_string(),
                format!("tap,id=n0,ifname={TAP},script=no,downscript=no"),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={MAC0}"),
                // The guest clock starts ~25 years in the past.
                "-rtc".into(),
                "base=2001-01-01T00:00:00".into(),
            ])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Puts the calling thread into the namespace at `path`.
fn enter(path: &PathBuf) -> Result<()> {
    let fd = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&fd),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering {}", path.display()))
}

/// A UDP service on a thread inside the namespace: `answer` gets each datagram and may
/// return a reply. Counts the datagrams it got; stopped on drop.
struct UdpService {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl UdpService {
    fn start(
        ns: &Netns,
        bind: (&'static str, u16),
        answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> Result<UdpService> {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU32::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, n_seen) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let sock = enter(&path).and_then(|()| {
                let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind:?}"))?;
                sock.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(sock)
            });
            let sock = match sock {
                Ok(sock) => {
                    let _ = ready_tx.send(Ok(()));
                    sock
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                n_seen.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = answer(&buf[..n]) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("UDP service did not start")??;
        Ok(UdpService {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    fn seen(&self) -> u32 {
        self.seen.load(Ordering::SeqCst)
    }

    /// An SNTP responder on `10.99.0.1:123` answering with the real current time.
    fn sntp(ns: &Netns) -> Result<UdpService> {
        UdpService::start(ns, (HOST_IP, 123), |req| {
            if req.len() < 48 {
                return None;
            }
            let mut r = vec![0u8; 48];
            r[0] = 0x24; // LI 0, version 4, mode 4 (server)
            r[1] = 1; // stratum 1
            r[12..16].copy_from_slice(b"KILN");
            r[24..32].copy_from_slice(&req[40..48]); // origin = client's transmit
            let now = ntp_now();
            r[16..24].copy_from_slice(&now.to_be_bytes()); // reference
            r[32..40].copy_from_slice(&now.to_be_bytes()); // receive
            r[40..48].copy_from_slice(&ntp_now().to_be_bytes()); // transmit
            Some(r)
        })
    }
}

impl Drop for UdpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Now as an NTP timestamp (seconds since 1900 . 32-bit fraction).
fn ntp_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = (now.as_secs() + 2_208_988_800) & 0xffff_ffff;
    let frac = (u64::from(now.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Years from the guest's RTC base (2001-01-01) to now, as the agent rounds them.
fn years_since_2001() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let base = 978_307_200.0; // 2001-01-01T00:00:00Z
    ((now - base) / (365.25 * 86_400.0)).round() as i64
}

/// Checks the `clock moved +N years (from NTP 10.99.0.1)` line against the real time.
fn check_clock(g: &mut Guest) -> Result<()> {
    let line = g.expect("clock moved ", STEP)?;
    let years: i64 = line
        .split("clock moved +")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no whole years in {line:?}"))?;
    let want = years_since_2001();
    ensure!(
        (years - want).abs() <= 1 && line.ends_with(&format!("years (from NTP {HOST_IP})")),
        "expected the clock to move +{want} years from NTP {HOST_IP}: {line}"
    );
    eprintln!("clock: {line}");
    Ok(())
}

/// dnsmasq serving DHCP on `br0` inside the namespace; killed on drop (its log is printed
/// if the test failed).
struct Dnsmasq {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(ns: &Netns, args: &[&str]) -> Result<Dnsmasq> {
        let dir = tempfile::tempdir()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq", "--no-daemon"])
            .args(["--conf-file=/dev/null", "--port=0", "--user=root"])
            .args([
                "--interface=br0",
                "--bind-interfaces",
                "--dhcp-authoritative",
            ])
            .args(["--log-dhcp", "--no-ping"])
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("log"))?)
            .spawn()
            .context("starting dnsmasq (apt install dnsmasq-base)")?;
        let mut d = Dnsmasq { child, dir };
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = d.child.try_wait()? {
            bail!("dnsmasq exited ({status}): {}", d.log());
        }
        Ok(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("dnsmasq log:\n{}", self.log());
        }
    }
}

/// Runs `script` in a busybox shell on the guest's serial console; returns its output
/// (the lines between two markers the shell prints; the typed text never contains them).
fn shell(g: &mut Guest, script: &str) -> Result<String> {
    g.type_line("shell")?;
    g.expect("starting a shell on /dev/ttyS0", STEP)?;
    std::thread::sleep(Duration::from_millis(500));
    g.type_line(&format!(
        "echo KILN-$((40+2))-BEGIN; {script}; echo KILN-$((40+2))-END; exit"
    ))?;
    g.expect("KILN-42-BEGIN", STEP)?;
    let text_before = g.serial_text();
    g.expect("KILN-42-END", STEP)?;
    let all = g.serial_text();
    let start = text_before.rfind("KILN-42-BEGIN").context("begin marker")?;
    let end = all.rfind("KILN-42-END").context("end marker")?;
    g.expect("shell exited", STEP)?;
    Ok(all[start + "KILN-42-BEGIN".len()..end]
        .replace('\r', "")
        .trim()
        .to_string())
}

#[test]
#[ignore = "vm: boots QEMU in a network namespace with a bridge and a tap (root)"]
fn vm_net_static_ip_without_dhcp_server() -> Result<()> {
    let ns = Netns::new()?;
    let sntp = UdpService::sntp(&ns)?;
    // Whatever reaches the DHCP server port on the host side (broadcasts included).
    let dhcp_port = UdpService::start(&ns, ("0.0.0.0", 67), |_| None)?;
    // client::gw:netmask:hostname:device:autoconf:dns0:dns1:ntp0; nobody serves DHCP here.
    let ip = format!(
        "ip=10.99.0.15::{HOST_IP}:255.255.255.0:kiln-static:eth0:none:10.99.0.53::{HOST_IP}"
    );
    let mut g = ns.guest("net-static", kernel_boot(&ip)?).start()?;
    g.check(|g| {
        g.expect("eth0: link up", BOOT)?;
        address_applied(
            g,
            "static ip=",
            "eth0",
            &format!("10.99.0.15/24 via {HOST_IP}"),
        )?;
        g.expect("DNS servers 10.99.0.53", STEP)?;
        g.expect("hostname set to kiln-static", STEP)?;
        // The address really works: the guest asked the responder on the host side.
        check_clock(g)?;
        g.expect("nothing more to do", STEP)?;
        no_line_contains(g, "DHCP")
    })?;
    ensure!(sntp.seen() > 0, "no SNTP request seen");
    ensure!(
        dhcp_port.seen() == 0,
        "{} packets to the DHCP server port",
        dhcp_port.seen()
    );
    Ok(())
}

#[test]
#[ignore = "vm: boots QEMU in a network namespace with dnsmasq (root)"]
fn vm_net_dnsmasq_lease_routes_dns_ntp_and_clock() -> Result<()> {
    let ns = Netns::new()?;
    let sntp = UdpService::sntp(&ns)?;
    let dnsmasq = Dnsmasq::start(
        &ns,
        &[
            "--dhcp-range=10.99.0.50,10.99.0.60,255.255.255.0,10m",
            "--dhcp-option=option:router,10.99.0.1",
            "--dhcp-option=option:dns-server,10.99.0.53,10.99.0.54",
            "--dhcp-option=option:ntp-server,10.99.0.1",
            "--dhcp-option=option:domain-search,lab.kiln.test,kiln.test",
            "--dhcp-option=option:domain-name,kiln.test",
            "--dhcp-option=option:mtu,1400",
            // RFC 3442: with option 121 the router option is ignored, so the default
            // route is in it too.
            "--dhcp-option=121,10.98.0.0/16,10.99.0.254,0.0.0.0/0,10.99.0.1",
        ],
    )?;
    let mut g = ns.guest("net-dnsmasq", kernel_boot("")?).start()?;
    let r = g.check(|g| {
        g.expect("eth0: link up", BOOT)?;
        let ack = g.expect("eth0: DHCP ack ", STEP)?;
        ensure!(
            ack.contains(&format!("from {HOST_IP}, lease 600 s")),
            "{ack}"
        );
        let line = address_applied(g, "dnsmasq in a netns", "eth0", "10.99.0.5")?;
        ensure!(
            line.contains(&format!("/24 via {HOST_IP}, 2 routes, MTU 1400")),
            "{line}"
        );
        let address = line
            .split("address ")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .context("address")?
            .to_string();
        g.expect(
            "DNS servers 10.99.0.53 10.99.0.54, search lab.kiln.test kiln.test",
            STEP,
        )?;
        check_clock(g)?;
        g.expect("nothing more to do", STEP)?;
        // What the kernel and the files say, from a shell on the guest.
        let out = shell(
            g,
            "busybox ip -4 addr show dev eth0; busybox ip -4 route; cat /etc/resolv.conf; \
             busybox ip link show dev eth0; date -u +EPOCH=%s",
        )?;
        eprintln!("guest state:\n{out}");
        let guest_now: u64 = out
            .split("EPOCH=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no EPOCH= in {out:?}"))?;
        let host_now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        ensure!(
            guest_now.abs_diff(host_now) < 120,
            "guest clock {guest_now} s, host {host_now} s since 1970"
        );
        for want in [
            format!("inet {address}/24"),
            format!("default via {HOST_IP} dev eth0"),
            "10.98.0.0/16 via 10.99.0.254 dev eth0".to_string(),
            "nameserver 10.99.0.53\nnameserver 10.99.0.54\nsearch lab.kiln.test kiln.test"
                .to_string(),
            "mtu 1400".to_string(),
        ] {
            ensure!(
                out.contains(&want),
                "{want:?} not in the guest's state:\n{out}"
            );
        }
        Ok(())
    });
    if r.is_err() {
        eprintln!("dnsmasq log:\n{}", dnsmasq.log());
    }
    r?;
    ensure!(sntp.seen() > 0, "no SNTP request seen");
    Ok(())
}
