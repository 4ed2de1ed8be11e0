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

mod background;
mod select;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};

use background::{spawn_link_watcher, spawn_renewer};
pub use cmdline::{IpParam, MacAddr, NetworkConfig, NicSelector, NtpServer, ParamError, StaticIp};
pub use dhcp::Lease;
pub use events::NetEvent;
use netlink::{Link, Netlink};
use select::{preferred_link, race_dhcp, wait_for_carrier};

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

/// The network once up. The background threads (lease renewal, link watch) run until
/// [`Network::shutdown`]; dropping this value leaves them running, as PID 1 wants.
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
    let links = links_up(&mut nl, cfg, &*emit)?;
    let with_carrier = wait_for_carrier(&mut nl, &links, cfg, opts, &*emit)?;
    let nics = Nics {
        all: &links,
        with_carrier: &with_carrier,
        preferred: preferred_link(&links, cfg),
    };
    warn_unmatched(nics.preferred, cfg, &*emit);

    let params = if cfg.ip.is_empty() {
        vec![IpParam::Dhcp {
            device: None,
            mtu: None,
            hostname: None,
        }]
    } else {
        cfg.ip.clone()
    };
    let mut learned = Learned {
        dns: cfg.nameservers.clone(),
        ..Learned::default()
    };
    for p in &params {
        let configured = match p {
            IpParam::Off => continue,
            IpParam::Static(s) => configure_static(&mut nl, &nics, s, &mut learned, &*emit)?,
            IpParam::Dhcp {
                device,
                mtu,
                hostname,
            } => {
                let dhcp = DhcpParam {
                    device: device.as_deref(),
                    mtu: *mtu,
                    hostname: hostname.as_deref(),
                };
                let (configured, renewer) =
                    configure_dhcp(&mut nl, &nics, &dhcp, cfg, opts, &stop, &emit, &mut learned)?;
                net.threads.extend(renewer);
                configured
            }
        };
        net.interfaces.push(configured);
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
    write_names(&mut learned, opts, &*emit)?;
    net.dns = learned.dns;
    net.search = learned.search;
    net.ntp = if cfg.ntp.is_empty() {
        learned
            .ntp
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

/// The Ethernet links bring-up works with, and which of them matter.
struct Nics<'a> {
    all: &'a [Link],
    with_carrier: &'a [Link],
    /// The NIC `BOOTIF=`/`kiln.ifname=` names, if one matches.
    preferred: Option<&'a Link>,
}

/// What the configured interfaces contribute to resolv.conf, the hostname and NTP.
#[derive(Default)]
struct Learned {
    hostname: Option<String>,
    ntp: Vec<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    search: Vec<String>,
}

/// An `ip=…:dhcp` parameter, borrowed.
struct DhcpParam<'a> {
    device: Option<&'a str>,
    mtu: Option<u32>,
    hostname: Option<&'a str>,
}

/// VLANs from `vlan=`, then every Ethernet link up.
fn links_up(
    nl: &mut Netlink,
    cfg: &NetworkConfig,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<Vec<Link>> {
    create_vlans(nl, cfg, emit)?;
    let links = ethernet_links(nl, cfg)?;
    if links.is_empty() {
        bail!("no Ethernet interface found (is the NIC driver in the installer kernel?)");
    }
    for l in &links {
        nl.set_up(l.index)?;
    }
    Ok(links)
}

/// A warning when `kiln.ifname=` or `BOOTIF=` names no interface.
fn warn_unmatched(preferred: Option<&Link>, cfg: &NetworkConfig, emit: &dyn Fn(NetEvent)) {
    if preferred.is_some() || (cfg.ifname.is_none() && cfg.boot_mac.is_none()) {
        return;
    }
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

/// A static `ip=`: on the named device, else the preferred NIC, else the first with link.
fn configure_static(
    nl: &mut Netlink,
    nics: &Nics,
    s: &StaticIp,
    learned: &mut Learned,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<Configured> {
    let link = match &s.device {
        Some(d) => nics
            .all
            .iter()
            .find(|l| &l.name == d)
            .with_context(|| format!("ip=: no Ethernet interface named {d}"))?,
        None => nics
            .preferred
            .or_else(|| nics.with_carrier.first())
            .or(nics.all.first())
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
    apply_address(nl, link, s.address, s.prefix_len, &routes, s.mtu, emit)?;
    learned.dns.extend(&s.dns);
    learned.ntp.extend(&s.ntp);
    learned.hostname = learned.hostname.take().or(s.hostname.clone());
    Ok(Configured {
        ifname: link.name.clone(),
        address: s.address,
        prefix_len: s.prefix_len,
        gateway: s.gateway,
        lease: None,
    })
}

/// DHCP on the named device, or raced on every NIC with link; the lease applied, and its
/// renewal thread (unless renewal is off or the lease is infinite).
#[allow(clippy::too_many_arguments)]
fn configure_dhcp(
    nl: &mut Netlink,
    nics: &Nics,
    p: &DhcpParam,
    cfg: &NetworkConfig,
    opts: &Options,
    stop: &Arc<AtomicBool>,
    emit: &Emitter,
    learned: &mut Learned,
) -> anyhow::Result<(Configured, Option<JoinHandle<()>>)> {
    let candidates: Vec<&Link> = match p.device {
        Some(d) => nics.all.iter().filter(|l| l.name == d).collect(),
        None => nics.with_carrier.iter().collect(),
    };
    if candidates.is_empty() {
        match p.device {
            Some(d) => bail!("ip={d}:dhcp: no Ethernet interface named {d}"),
            None => bail!("no network interface has a link (cable?) for DHCP"),
        }
    }
    // Prefer the named NIC only when it is racing (it has link).
    let want = match p.device {
        Some(_) => None,
        None => nics
            .preferred
            .filter(|p| candidates.iter().any(|c| c.index == p.index))
            .map(|l| l.name.clone()),
    };
    let lease = race_dhcp(&candidates, want.as_deref(), opts, emit)?;
    let link = nics
        .all
        .iter()
        .find(|l| l.name == lease.ifname)
        .context("leased interface vanished")?;
    let lease_mtu = p.mtu.or(lease.mtu.map(u32::from));
    apply_address(
        nl,
        link,
        lease.address,
        lease.prefix_len,
        &lease.routes(),
        lease_mtu,
        &**emit,
    )?;
    learned.dns.extend(&lease.dns);
    learned.search.extend(lease.search_domains());
    learned.ntp.extend(&lease.ntp);
    learned.hostname = learned
        .hostname
        .take()
        .or(p.hostname.map(str::to_string))
        .or(lease.hostname.clone());
    let mut renewer = None;
    if opts.renew && lease.lease_secs != u32::MAX {
        renewer = Some(spawn_renewer(
            link.clone(),
            lease.clone(),
            cfg.nameservers.clone(),
            opts.clone(),
            stop.clone(),
            emit.clone(),
        )?);
    }
    let configured = Configured {
        ifname: link.name.clone(),
        address: lease.address,
        prefix_len: lease.prefix_len,
        gateway: lease.gateway(),
        lease: Some(lease),
    };
    Ok((configured, renewer))
}

/// `/etc/resolv.conf` and the hostname (file, and the kernel's unless turned off).
fn write_names(
    learned: &mut Learned,
    opts: &Options,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<()> {
    dedup(&mut learned.dns);
    dedup(&mut learned.search);
    resolv::write(&opts.root, &learned.dns, &learned.search)?;
    emit(NetEvent::Dns {
        servers: learned
            .dns
            .iter()
            .take(resolv::MAX_NAMESERVERS)
            .copied()
            .collect(),
        search: learned.search.clone(),
    });
    if let Some(h) = &learned.hostname {
        resolv::write_hostname(&opts.root, h)?;
        if opts.set_hostname {
            rustix::system::sethostname(h.as_bytes())
                .with_context(|| format!("setting hostname {h}"))?;
        }
        emit(NetEvent::Hostname { name: h.clone() });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_reads() {
        assert!(since_boot_ms() > 0);
    }
}
