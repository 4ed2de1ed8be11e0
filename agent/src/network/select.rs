//! Choosing the NIC: the carrier wait, the NIC named by `kiln.ifname=`/`BOOTIF=`, and the
//! DHCP race on every NIC with link (first lease wins unless one is named; unused leases
//! are released).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::netlink::{Link, Netlink};
use super::{Emitter, NetEvent, NetworkConfig, NicSelector, Options, dhcp, inventory};
use dhcp::Lease;

/// The NIC named by `kiln.ifname=` or else `BOOTIF=`.
pub(super) fn preferred_link<'a>(links: &'a [Link], cfg: &NetworkConfig) -> Option<&'a Link> {
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
pub(super) fn wait_for_carrier(
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
pub(super) struct Cancellable<T> {
    pub(super) inner: T,
    pub(super) cancel: Arc<AtomicBool>,
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

/// A lease and the link-layer address its ACK came from.
type Got = (Lease, Option<[u8; 6]>);

/// DHCP on one link until a lease, the deadline, or `cancel`.
fn dhcp_on(
    link: &Link,
    cancel: Arc<AtomicBool>,
    timing: &dhcp::Timing,
    deadline: Instant,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<Got> {
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
    let lease = dhcp::acquire(&mut t, &client, timing, deadline, emit)?;
    Ok((lease, t.inner.last_peer_mac()))
}

/// DHCP on every candidate at once; returns the preferred NIC's lease, or the first lease
/// when no NIC is preferred (or the preferred one gets none). Leases got but not used are
/// released (DHCPRELEASE), so a machine with four cabled NICs does not hold four addresses.
pub(super) fn race_dhcp(
    candidates: &[&Link],
    preferred: Option<&str>,
    opts: &Options,
    emit: &Emitter,
) -> anyhow::Result<Lease> {
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
                    let r = dhcp_on(&link, cancel, &timing, deadline, &*emit);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::MacAddr;

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
}
