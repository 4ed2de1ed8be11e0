//! Network bring-up in the installer: links, DHCPv4, static `ip=`, DNS and the clock.
//!
//! [`bring_up`] runs the phases in order, each reported as a typed [`NetEvent`]:
//! VLANs from `vlan=`, every Ethernet link up, a bounded wait for carrier, then per `ip=`
//! either a static configuration or DHCP on every NIC with carrier at once (first lease
//! wins unless `BOOTIF=`/`kiln.ifname=` names the NIC), addresses/routes/MTU via netlink,
//! `/etc/resolv.conf`, the hostname, and SNTP. A background thread keeps DHCP leases
//! renewed for the agent's whole life and starts over on NAK or expiry.
//!
//! See docs/network.md for the design choices.

pub mod clock;
pub mod cmdline;
pub mod dhcp;
pub mod events;
pub mod inventory;
pub mod netlink;
pub mod resolv;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use cmdline::{IpParam, MacAddr, NetworkConfig, NicSelector, NtpServer, ParamError, StaticIp};
pub use dhcp::Lease;
pub use events::NetEvent;
use netlink::{Link, Netlink};

/// Where events go. Shared with the renewal thread, hence `Arc` + `Send + Sync`.
pub type Emitter = Arc<dyn Fn(NetEvent) + Send + Sync>;

/// Knobs with installer defaults; tests point the paths at temp dirs and turn off the
/// parts that would change the host (hostname, clock).
#[derive(Debug, Clone)]
pub struct Options {
    /// Root under which `etc/resolv.conf` and `etc/hostname` are written.
    pub root: PathBuf,
    /// sysfs root (link speeds).
    pub sysfs: PathBuf,
    /// Longest wait for any carrier.
    pub carrier_timeout: Duration,
    /// Once one NIC has carrier, how much longer to wait for the others.
    pub carrier_grace: Duration,
    /// Longest wait for a DHCP lease.
    pub dhcp_timeout: Duration,
    /// Total SNTP budget.
    pub ntp_timeout: Duration,
    pub set_hostname: bool,
    pub set_clock: bool,
    /// Keep leases renewed in a background thread.
    pub renew: bool,
    /// Report carrier changes after bring-up (`LinkDown`/`LinkUp`) from a background thread.
    pub watch_links: bool,
    pub dhcp_timing: dhcp::Timing,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            root: PathBuf::from("/"),
            sysfs: inventory::sysfs_root(),
            carrier_timeout: Duration::from_secs(10),
            carrier_grace: Duration::from_secs(2),
            dhcp_timeout: Duration::from_secs(60),
            ntp_timeout: Duration::from_secs(6),
            set_hostname: true,
            set_clock: true,
            renew: true,
            watch_links: true,
            dhcp_timing: dhcp::Timing::default(),
        }
    }
}

/// One configured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The DHCP lease, for DHCP-configured interfaces.
    pub lease: Option<Lease>,
}

/// The network once up. Dropping it stops the background threads (leases stay applied).
#[derive(Debug)]
pub struct Network {
    pub interfaces: Vec<Configured>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub ntp: Vec<NtpServer>,
    /// Clock offset applied by SNTP, ns (None: not set).
    pub clock_offset_nanos: Option<i128>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Network {
    /// Stops the background threads (renewal, link watch) and waits for them.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Brings the network up as `cfg` says. Errors name what failed: no Ethernet NIC, no NIC
/// with link for DHCP, no lease before the timeout, a device named in `ip=`/`vlan=` missing,
/// or the kernel refusing an address or default route. A refused MTU or extra route, or a
/// clock that cannot be set, is only reported as an event.
pub fn bring_up(cfg: &NetworkConfig, opts: &Options, emit: Emitter) -> anyhow::Result<Network> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut net = Network {
        interfaces: Vec::new(),
        dns: Vec::new(),
        search: Vec::new(),
        ntp: Vec::new(),
        clock_offset_nanos: None,
        stop: stop.clone(),
        threads: Vec::new(),
    };
    let mut nl = Netlink::open()?;
    if let Some(lo) = nl.links()?.into_iter().find(|l| l.name == "lo") {
        nl.set_up(lo.index).context("bringing up lo")?;
    }
    if cfg.is_off() {
        return Ok(net);
    }
    create_vlans(&mut nl, cfg, &*emit)?;
    let links = ethernet_links(&mut nl, cfg)?;
    if links.is_empty() {
        bail!("no Ethernet interface found (is the NIC driver in the installer kernel?)");
    }
    for l in &links {
        nl.set_up(l.index)?;
    }
    let with_carrier = wait_for_carrier(&mut nl, &links, cfg, opts, &*emit)?;
    let preferred = preferred_link(&links, cfg);
    if preferred.is_none() && (cfg.ifname.is_some() || cfg.boot_mac.is_some()) {
        emit(NetEvent::Warning {
            message: format!(
                "no interface matches {}; using whichever NIC gets a lease first",
                match (&cfg.ifname, cfg.boot_mac) {
                    (Some(NicSelector::Name(n)), _) => format!("kiln.ifname={n}"),
                    (Some(NicSelector::Mac(m)), _) => format!("kiln.ifname={m}"),
                    (None, Some(m)) => format!("BOOTIF ({m})"),
                    (None, None) => String::new(),
                }
            ),
        });
    }

    let params = if cfg.ip.is_empty() {
        vec![IpParam::Dhcp {
            device: None,
            mtu: None,
        }]
    } else {
        cfg.ip.clone()
    };
    let mut hostname = None;
    let mut ntp_from_net: Vec<Ipv4Addr> = Vec::new();
    let mut dns = cfg.nameservers.clone();
    let mut search = Vec::new();
    for p in &params {
        match p {
            IpParam::Off => {}
            IpParam::Static(s) => {
                let link = match &s.device {
                    Some(d) => links
                        .iter()
                        .find(|l| &l.name == d)
                        .with_context(|| format!("ip=: no Ethernet interface named {d}"))?,
                    None => preferred
                        .or_else(|| with_carrier.first())
                        .or(links.first())
                        .context("ip=: no interface to configure")?,
                };
                let routes: Vec<_> = s
                    .gateway
                    .map(|g| dhcp::wire::ClasslessRoute {
                        destination: Ipv4Addr::UNSPECIFIED,
                        prefix_len: 0,
                        gateway: g,
                    })
                    .into_iter()
                    .collect();
                apply_address(
                    &mut nl,
                    link,
                    s.address,
                    s.prefix_len,
                    &routes,
                    s.mtu,
                    &*emit,
                )?;
                dns.extend(&s.dns);
                ntp_from_net.extend(&s.ntp);
                hostname = hostname.or(s.hostname.clone());
                net.interfaces.push(Configured {
                    ifname: link.name.clone(),
                    address: s.address,
                    prefix_len: s.prefix_len,
                    gateway: s.gateway,
                    lease: None,
                });
            }
            IpParam::Dhcp { device, mtu } => {
                let candidates: Vec<&Link> = match device {
                    Some(d) => links.iter().filter(|l| &l.name == d).collect(),
                    None => with_carrier.iter().collect(),
                };
                if candidates.is_empty() {
                    match device {
                        Some(d) => bail!("ip={d}:dhcp: no Ethernet interface named {d}"),
                        None => bail!("no network interface has a link (cable?) for DHCP"),
                    }
                }
                // Prefer the named NIC only when it is racing (it has link).
                let want = match device {
                    Some(_) => None,
                    None => preferred
                        .filter(|p| candidates.iter().any(|c| c.index == p.index))
                        .map(|l| l.name.clone()),
                };
                let lease = race_dhcp(&candidates, want.as_deref(), opts, &emit)?;
                let link = links
                    .iter()
                    .find(|l| l.name == lease.ifname)
                    .context("leased interface vanished")?;
                let lease_mtu = mtu.or(lease.mtu.map(u32::from));
                apply_address(
                    &mut nl,
                    link,
                    lease.address,
                    lease.prefix_len,
                    &lease.routes(),
                    lease_mtu,
                    &*emit,
                )?;
                dns.extend(&lease.dns);
                search.extend(lease.search_domains());
                ntp_from_net.extend(&lease.ntp);
                hostname = hostname.or(lease.hostname.clone());
                if opts.renew && lease.lease_secs != u32::MAX {
                    net.threads.push(spawn_renewer(
                        link.clone(),
                        lease.clone(),
                        cfg.nameservers.clone(),
                        opts.clone(),
                        stop.clone(),
                        emit.clone(),
                    )?);
                }
                net.interfaces.push(Configured {
                    ifname: link.name.clone(),
                    address: lease.address,
                    prefix_len: lease.prefix_len,
                    gateway: lease.gateway(),
                    lease: Some(lease),
                });
            }
        }
    }

    if opts.watch_links {
        net.threads.push(spawn_link_watcher(
            &mut nl,
            &links,
            opts,
            stop.clone(),
            emit.clone(),
        )?);
    }
    dedup(&mut dns);
    dedup(&mut search);
    resolv::write(&opts.root, &dns, &search)?;
    emit(NetEvent::Dns {
        servers: dns.iter().take(resolv::MAX_NAMESERVERS).copied().collect(),
        search: search.clone(),
    });
    if let Some(h) = &hostname {
        resolv::write_hostname(&opts.root, h)?;
        if opts.set_hostname {
            rustix::system::sethostname(h.as_bytes())
                .with_context(|| format!("setting hostname {h}"))?;
        }
        emit(NetEvent::Hostname { name: h.clone() });
    }
    net.dns = dns;
    net.search = search;
    net.ntp = if cfg.ntp.is_empty() {
        ntp_from_net
            .iter()
            .map(|a| NtpServer {
                host: a.to_string(),
                port: 123,
            })
            .collect()
    } else {
        cfg.ntp.clone()
    };
    net.clock_offset_nanos =
        clock::sync_and_step(&net.ntp, opts.ntp_timeout, opts.set_clock, &*emit);
    Ok(net)
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

fn create_vlans(
    nl: &mut Netlink,
    cfg: &NetworkConfig,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<()> {
    for v in &cfg.vlans {
        let parent = nl
            .link(&v.parent)
            .with_context(|| format!("vlan={}:{}", v.name, v.parent))?;
        nl.set_up(parent.index)?;
        nl.add_vlan(&v.name, parent.index, v.id)?;
        emit(NetEvent::VlanCreated {
            name: v.name.clone(),
            parent: v.parent.clone(),
            id: v.id,
        });
    }
    Ok(())
}

/// Ethernet links Kiln may use: physical NICs and the VLANs we created (no lo, bridges,
/// tunnels). A veth is accepted too: that is what the namespace tests use.
fn ethernet_links(nl: &mut Netlink, cfg: &NetworkConfig) -> anyhow::Result<Vec<Link>> {
    let vlans: Vec<&str> = cfg.vlans.iter().map(|v| v.name.as_str()).collect();
    Ok(nl
        .links()?
        .into_iter()
        .filter(|l| l.ethernet && l.name != "lo")
        .filter(|l| match l.kind.as_deref() {
            None | Some("veth") => true,
            Some("vlan") => vlans.contains(&l.name.as_str()),
            Some(_) => false,
        })
        .collect())
}

/// The NIC named by `kiln.ifname=` or else `BOOTIF=`.
fn preferred_link<'a>(links: &'a [Link], cfg: &NetworkConfig) -> Option<&'a Link> {
    match &cfg.ifname {
        Some(NicSelector::Name(n)) => return links.iter().find(|l| &l.name == n),
        Some(NicSelector::Mac(m)) => {
            return links
                .iter()
                .find(|l| l.mac == Some(*m) && l.kind.as_deref() != Some("vlan"));
        }
        None => {}
    }
    cfg.boot_mac.and_then(|m| {
        links
            .iter()
            .find(|l| l.mac == Some(m) && l.kind.as_deref() != Some("vlan"))
    })
}

/// Waits until every link has carrier, the preferred one has it, `carrier_grace` passed
/// since the first got it (only without a preferred NIC), or `carrier_timeout`. Returns
/// the links with carrier.
fn wait_for_carrier(
    nl: &mut Netlink,
    links: &[Link],
    cfg: &NetworkConfig,
    opts: &Options,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<Vec<Link>> {
    let start = Instant::now();
    let preferred = preferred_link(links, cfg).map(|l| l.index);
    let mut first_up: Option<Instant> = None;
    let mut reported: Vec<u32> = Vec::new();
    loop {
        let now_links: Vec<Link> = nl
            .links()?
            .into_iter()
            .filter(|l| links.iter().any(|x| x.index == l.index))
            .collect();
        let up: Vec<Link> = now_links.iter().filter(|l| l.carrier).cloned().collect();
        for l in &up {
            if !reported.contains(&l.index) {
                reported.push(l.index);
                emit(NetEvent::LinkUp {
                    ifname: l.name.clone(),
                    speed_mbps: inventory::speed(&opts.sysfs, &l.name),
                });
            }
        }
        if !up.is_empty() && first_up.is_none() {
            first_up = Some(Instant::now());
        }
        let done = up.len() == links.len()
            || preferred.is_some_and(|p| up.iter().any(|l| l.index == p))
            // The NIC the firmware booted from surely has a cable: wait for it, not a grace.
            || (preferred.is_none()
                && first_up.is_some_and(|t| t.elapsed() >= opts.carrier_grace))
            || start.elapsed() >= opts.carrier_timeout;
        if done {
            for l in now_links.iter().filter(|l| !l.carrier) {
                emit(NetEvent::LinkDown {
                    ifname: l.name.clone(),
                });
            }
            return Ok(up);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A transport that gives up once `cancel` is set (losers of the DHCP race).
struct Cancellable<T> {
    inner: T,
    cancel: Arc<AtomicBool>,
}

impl<T: dhcp::Transport> dhcp::Transport for Cancellable<T> {
    fn send(&mut self, payload: &[u8], to: Ipv4Addr) -> std::io::Result<()> {
        self.check()?;
        self.inner.send(payload, to)
    }
    fn recv(&mut self, timeout: Duration) -> std::io::Result<Option<Vec<u8>>> {
        self.check()?;
        self.inner.recv(timeout.min(Duration::from_millis(250)))
    }
}

impl<T> Cancellable<T> {
    fn check(&self) -> std::io::Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled (another NIC got the lease, or shutting down)",
            ));
        }
        Ok(())
    }
}

/// DHCP on every candidate at once; returns the preferred NIC's lease, or the first lease
/// when no NIC is preferred (or the preferred one gets none). Leases got but not used are
/// released (DHCPRELEASE), so a machine with four cabled NICs does not hold four addresses.
fn race_dhcp(
    candidates: &[&Link],
    preferred: Option<&str>,
    opts: &Options,
    emit: &Emitter,
) -> anyhow::Result<Lease> {
    /// A lease and the link-layer address its ACK came from.
    type Got = (Lease, Option<[u8; 6]>);
    let cancel = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + opts.dhcp_timeout;
    let (tx, rx) = mpsc::channel::<(String, anyhow::Result<Got>)>();
    let mut handles = Vec::new();
    for l in candidates {
        let (tx, cancel, emit, timing) =
            (tx.clone(), cancel.clone(), emit.clone(), opts.dhcp_timing);
        let link = (*l).clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("dhcp-{}", link.name))
                .spawn(move || {
                    let r = (|| {
                        let mac = link
                            .mac
                            .with_context(|| format!("{} has no MAC address", link.name))?;
                        let sock = dhcp::socket::PacketTransport::open(link.index)
                            .with_context(|| format!("{}: opening DHCP socket", link.name))?;
                        let mut t = Cancellable {
                            inner: sock,
                            cancel,
                        };
                        let client = dhcp::Client {
                            ifname: link.name.clone(),
                            mac: mac.0,
                        };
                        let lease = dhcp::acquire(&mut t, &client, &timing, deadline, &*emit)?;
                        Ok((lease, t.inner.last_peer_mac()))
                    })();
                    let _ = tx.send((link.name.clone(), r));
                })?,
        );
    }
    drop(tx);
    let mut errors = Vec::new();
    // Without a preferred NIC any lease wins; with one, others wait until it fails.
    let mut any_wins = preferred.is_none();
    let mut fallback: Option<Got> = None;
    let mut unused: Vec<Got> = Vec::new();
    let mut chosen = None;
    for (name, r) in rx.iter() {
        let is_preferred = preferred == Some(name.as_str());
        match r {
            Ok(got) if is_preferred || any_wins => {
                let reason = match (is_preferred, preferred) {
                    (true, _) => "named by BOOTIF/kiln.ifname".to_string(),
                    (false, Some(p)) => format!("{p} (preferred) got no lease"),
                    (false, None) => "first lease".to_string(),
                };
                emit(NetEvent::LeaseSelected {
                    ifname: name,
                    reason,
                });
                chosen = Some(got.0);
                break;
            }
            Ok(got) if fallback.is_none() => fallback = Some(got),
            Ok(got) => unused.push(got),
            Err(e) => {
                errors.push(format!("{e:#}"));
                if is_preferred {
                    any_wins = true;
                    if let Some((l, _)) = fallback.take() {
                        emit(NetEvent::LeaseSelected {
                            ifname: l.ifname.clone(),
                            reason: format!("{name} (preferred) got no lease"),
                        });
                        chosen = Some(l);
                        break;
                    }
                }
            }
        }
    }
    cancel.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    if chosen.is_none()
        && let Some((l, _)) = fallback.take()
    {
        emit(NetEvent::LeaseSelected {
            ifname: l.ifname.clone(),
            reason: "the preferred NIC gave no answer".into(),
        });
        chosen = Some(l);
    }
    unused.extend(fallback);
    unused.extend(rx.try_iter().filter_map(|(_, r)| r.ok()));
    for (lease, server_mac) in unused {
        if let Err(e) = release_lease(candidates, &lease, server_mac, &**emit) {
            emit(NetEvent::Warning {
                message: format!("{}: releasing unused lease: {e:#}", lease.ifname),
            });
        }
    }
    match chosen {
        Some(l) => Ok(l),
        None => bail!("DHCP failed on every interface: {}", errors.join("; ")),
    }
}

/// Sends DHCPRELEASE for a lease we will not use, from its address to the server's MAC
/// (or broadcast when unknown).
fn release_lease(
    candidates: &[&Link],
    lease: &Lease,
    server_mac: Option<[u8; 6]>,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<()> {
    let link = candidates
        .iter()
        .find(|l| l.name == lease.ifname)
        .context("link not found")?;
    let mac = link.mac.context("no MAC")?;
    let client = dhcp::Client {
        ifname: link.name.clone(),
        mac: mac.0,
    };
    let mut t = dhcp::socket::PacketTransport::open(link.index)?;
    let msg = dhcp::release(&client, lease).encode();
    t.send_frame(
        &msg,
        lease.address,
        lease.server,
        server_mac.unwrap_or([0xff; 6]),
    )?;
    emit(NetEvent::DhcpRelease {
        ifname: link.name.clone(),
        server: lease.server,
        address: lease.address,
    });
    Ok(())
}

/// Address, MTU and routes on one link.
fn apply_address(
    nl: &mut Netlink,
    link: &Link,
    address: Ipv4Addr,
    prefix_len: u8,
    routes: &[dhcp::wire::ClasslessRoute],
    mtu: Option<u32>,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<()> {
    // A bad MTU (say 9000 offered to a NIC that cannot) must not cost the network: warn.
    let mut applied_mtu = mtu.filter(|m| *m == link.mtu);
    if let Some(m) = mtu
        && m != link.mtu
    {
        match nl.set_mtu(link.index, m) {
            Ok(()) => applied_mtu = Some(m),
            Err(e) => emit(NetEvent::Warning {
                message: format!("{}: keeping MTU {}: {e:#}", link.name, link.mtu),
            }),
        }
    }
    nl.add_address(link.index, address, prefix_len)
        .with_context(|| format!("configuring {}", link.name))?;
    // On-link routes first, so gateways reached through them resolve. A default route that
    // cannot be added is an error; another route only a warning.
    let mut ordered: Vec<_> = routes.to_vec();
    ordered.sort_by_key(|r| !r.gateway.is_unspecified());
    let mut added = 0;
    for r in &ordered {
        match nl.add_route(
            link.index,
            r.destination,
            r.prefix_len,
            r.gateway,
            Some(address),
        ) {
            Ok(()) => added += 1,
            Err(e) if r.prefix_len > 0 => emit(NetEvent::Warning {
                message: format!("{}: skipping route: {e:#}", link.name),
            }),
            Err(e) => return Err(e.context(format!("configuring {}", link.name))),
        }
    }
    emit(NetEvent::AddressApplied {
        ifname: link.name.clone(),
        address,
        prefix_len,
        gateway: routes.iter().find(|r| r.prefix_len == 0).map(|r| r.gateway),
        routes: added,
        mtu: applied_mtu,
        since_boot_ms: since_boot_ms(),
    });
    Ok(())
}

/// Milliseconds since the kernel started.
pub fn since_boot_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Reports carrier changes of `links` (the Ethernet links bring-up used) until `stop`.
fn spawn_link_watcher(
    nl: &mut Netlink,
    links: &[Link],
    opts: &Options,
    stop: Arc<AtomicBool>,
    emit: Emitter,
) -> anyhow::Result<JoinHandle<()>> {
    // Subscribe first, then read the state: no change can fall in between.
    let mut watch = netlink::LinkWatch::open()?;
    let mut state: Vec<(u32, String, bool)> = nl
        .links()?
        .into_iter()
        .filter(|l| links.iter().any(|x| x.index == l.index))
        .map(|l| (l.index, l.name, l.carrier))
        .collect();
    let sysfs = opts.sysfs.clone();
    Ok(std::thread::Builder::new()
        .name("link-watch".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let changes = match watch.next(Duration::from_millis(500)) {
                    Ok(c) => c,
                    Err(e) => {
                        emit(NetEvent::Warning {
                            message: format!("link watch stopped: {e:#}"),
                        });
                        return;
                    }
                };
                for l in changes {
                    let Some(entry) = state.iter_mut().find(|(i, _, _)| *i == l.index) else {
                        continue;
                    };
                    if entry.2 == l.carrier {
                        continue;
                    }
                    entry.2 = l.carrier;
                    emit(if l.carrier {
                        NetEvent::LinkUp {
                            speed_mbps: inventory::speed(&sysfs, &l.name),
                            ifname: l.name,
                        }
                    } else {
                        NetEvent::LinkDown { ifname: l.name }
                    });
                }
            }
        })?)
}

/// Sleeps until `until` or until `stop` is set; false when stopped.
fn sleep_until(until: Instant, stop: &AtomicBool) -> bool {
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(500)));
    }
    !stop.load(Ordering::SeqCst)
}

fn spawn_renewer(
    link: Link,
    lease: Lease,
    nameservers: Vec<Ipv4Addr>,
    opts: Options,
    stop: Arc<AtomicBool>,
    emit: Emitter,
) -> anyhow::Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name(format!("dhcp-renew-{}", link.name))
        .spawn(move || {
            if let Err(e) = keep_renewed(&link, lease, &nameservers, &opts, &stop, &*emit)
                && !stop.load(Ordering::SeqCst)
            {
                emit(NetEvent::Warning {
                    message: format!("{}: DHCP renewal stopped: {e:#}", link.name),
                });
            }
        })?)
}

/// The lease's life: renew at T1 (unicast), rebind at T2 (broadcast), start over on NAK
/// or expiry (re-applying address, routes and, if they changed, resolv.conf). Runs until
/// `stop`. `nameservers` are the command line's, which stay first in resolv.conf.
fn keep_renewed(
    link: &Link,
    mut lease: Lease,
    nameservers: &[Ipv4Addr],
    opts: &Options,
    stop: &Arc<AtomicBool>,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<()> {
    let mac = link.mac.context("no MAC")?;
    let client = dhcp::Client {
        ifname: link.name.clone(),
        mac: mac.0,
    };
    let mut nl = Netlink::open()?;
    loop {
        let got = Instant::now();
        let secs = |s: u32| got + Duration::from_secs(u64::from(s));
        if !sleep_until(secs(lease.t1_secs), stop) {
            return Ok(());
        }
        let mut outcome = dhcp::Renewal::NoAnswer;
        if let Ok(inner) = dhcp::socket::UdpTransport::open(&link.name, lease.address) {
            let mut t = Cancellable {
                inner,
                cancel: stop.clone(),
            };
            outcome = dhcp::renew(
                &mut t,
                &client,
                &lease,
                lease.server,
                secs(lease.t2_secs),
                &opts.dhcp_timing,
            )?;
            if outcome == dhcp::Renewal::NoAnswer {
                outcome = dhcp::renew(
                    &mut t,
                    &client,
                    &lease,
                    Ipv4Addr::BROADCAST,
                    secs(lease.lease_secs),
                    &opts.dhcp_timing,
                )?;
            }
        }
        match outcome {
            dhcp::Renewal::Extended(new) if new.address == lease.address => {
                emit(NetEvent::LeaseRenewed {
                    ifname: link.name.clone(),
                    lease_secs: new.lease_secs,
                });
                lease = *new;
                continue;
            }
            dhcp::Renewal::Extended(_) => emit(NetEvent::LeaseLost {
                ifname: link.name.clone(),
                reason: "server changed the address".into(),
            }),
            dhcp::Renewal::Refused { server, .. } => emit(NetEvent::LeaseLost {
                ifname: link.name.clone(),
                reason: format!("NAK from {server}"),
            }),
            dhcp::Renewal::NoAnswer => emit(NetEvent::LeaseLost {
                ifname: link.name.clone(),
                reason: "expired without an answer".into(),
            }),
        }
        if let Err(e) = nl.del_address(link.index, lease.address, lease.prefix_len) {
            emit(NetEvent::Warning {
                message: format!("{e:#}"),
            });
        }
        // Start over until a lease comes back or we are stopped.
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let sock = dhcp::socket::PacketTransport::open(link.index)?;
            let mut t = Cancellable {
                inner: sock,
                cancel: stop.clone(),
            };
            match dhcp::acquire(
                &mut t,
                &client,
                &opts.dhcp_timing,
                Instant::now() + opts.dhcp_timeout,
                emit,
            ) {
                Ok(new) => {
                    let mtu = new.mtu.map(u32::from);
                    apply_address(
                        &mut nl,
                        link,
                        new.address,
                        new.prefix_len,
                        &new.routes(),
                        mtu,
                        emit,
                    )?;
                    if new.dns != lease.dns || new.search_domains() != lease.search_domains() {
                        let mut dns = nameservers.to_vec();
                        dns.extend(&new.dns);
                        dedup(&mut dns);
                        let search = new.search_domains();
                        resolv::write(&opts.root, &dns, &search)?;
                        emit(NetEvent::Dns {
                            servers: dns.into_iter().take(resolv::MAX_NAMESERVERS).collect(),
                            search,
                        });
                    }
                    lease = new;
                    break;
                }
                Err(e) => emit(NetEvent::Warning {
                    message: format!("{e:#}"),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: u8, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(MacAddr([0x52, 0x54, 0, 0, 0, mac])),
            ethernet: true,
            kind: kind.map(Into::into),
            up: true,
            carrier: true,
            mtu: 1500,
        }
    }

    #[test]
    fn preferred_nic_selection() {
        // A VLAN shares its parent's MAC: BOOTIF must pick the parent.
        let links = [
            link(2, "eno1", 1, None),
            link(3, "eno2", 2, None),
            link(4, "vlan7", 2, Some("vlan")),
        ];
        let params = |line: &str| {
            let kv: Vec<(String, Option<String>)> = line
                .split_whitespace()
                .map(|w| {
                    let (k, v) = w.split_once('=').unwrap();
                    (k.to_owned(), Some(v.to_owned()))
                })
                .collect();
            NetworkConfig::from_params(&kv).unwrap()
        };
        let pick = |line: &str| preferred_link(&links, &params(line)).map(|l| l.name.clone());
        assert_eq!(pick("BOOTIF=01-52-54-00-00-00-02").as_deref(), Some("eno2"));
        assert_eq!(pick("BOOTIF=52:54:00:00:00:01").as_deref(), Some("eno1"));
        assert_eq!(
            pick("kiln.ifname=eno1 BOOTIF=52:54:00:00:00:02").as_deref(),
            Some("eno1"),
            "kiln.ifname wins"
        );
        assert_eq!(
            pick("kiln.ifname=52:54:00:00:00:02").as_deref(),
            Some("eno2")
        );
        assert_eq!(pick("kiln.ifname=vlan7").as_deref(), Some("vlan7"));
        assert_eq!(pick("BOOTIF=52:54:00:00:00:09"), None);
        assert_eq!(pick("ip=dhcp"), None);
    }

    #[test]
    fn boot_clock_reads() {
        assert!(since_boot_ms() > 0);
    }
}
