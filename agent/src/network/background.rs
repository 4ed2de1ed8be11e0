//! What runs for the agent's whole life after bring-up: one DHCP renewal thread per lease
//! (renew at T1, rebind at T2, start over on NAK or expiry) and the link watch thread
//! (carrier changes as `LinkDown`/`LinkUp`).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::netlink::{self, Link, Netlink};
use super::select::Cancellable;
use super::{Emitter, NetEvent, Options, apply_address, dedup, dhcp, inventory, resolv};
use dhcp::Lease;

/// Reports carrier changes of `links` (the Ethernet links bring-up used) until `stop`.
pub(super) fn spawn_link_watcher(
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

pub(super) fn spawn_renewer(
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
/// `stop`; errors on the way are reported and retried, never end the thread.
/// `nameservers` are the command line's, which stay first in resolv.conf.
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
    let warn = |e: anyhow::Error| {
        if !stop.load(Ordering::SeqCst) {
            emit(NetEvent::Warning {
                message: format!("{}: {e:#}", link.name),
            });
        }
    };
    loop {
        let got = Instant::now();
        let secs = |s: u32| got + Duration::from_secs(u64::from(s));
        if !sleep_until(secs(lease.t1_secs), stop) {
            return Ok(());
        }
        let outcome = match dhcp::socket::UdpTransport::open(&link.name, lease.address) {
            Ok(inner) => {
                let mut t = Cancellable {
                    inner,
                    cancel: stop.clone(),
                };
                let mut phase = |to: Ipv4Addr, until: Instant| {
                    dhcp::renew(&mut t, &client, &lease, to, until, &opts.dhcp_timing)
                        .unwrap_or_else(|e| {
                            warn(anyhow::Error::new(e).context("renewing the DHCP lease"));
                            // Do not spin on a persistent error: wait for the deadline.
                            sleep_until(until, stop);
                            dhcp::Renewal::NoAnswer
                        })
                };
                match phase(lease.server, secs(lease.t2_secs)) {
                    dhcp::Renewal::NoAnswer => phase(Ipv4Addr::BROADCAST, secs(lease.lease_secs)),
                    other => other,
                }
            }
            Err(e) => {
                warn(anyhow::Error::new(e).context("opening the DHCP renewal socket"));
                sleep_until(secs(lease.lease_secs), stop);
                dhcp::Renewal::NoAnswer
            }
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reason = match outcome {
            dhcp::Renewal::Extended(new) if new.address == lease.address => {
                emit(NetEvent::LeaseRenewed {
                    ifname: link.name.clone(),
                    lease_secs: new.lease_secs,
                });
                lease = *new;
                continue;
            }
            dhcp::Renewal::Extended(_) => "the server changed the address".to_string(),
            dhcp::Renewal::Refused { server, .. } => format!("NAK from {server}"),
            dhcp::Renewal::NoAnswer => "no answer to renew or rebind before expiry".to_string(),
        };
        emit(NetEvent::LeaseLost {
            ifname: link.name.clone(),
            reason,
        });
        if let Err(e) = nl.del_address(link.index, lease.address, lease.prefix_len) {
            warn(e);
        }
        // Start over until a lease comes back or we are stopped.
        lease = loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match restart(
                link,
                &client,
                &mut nl,
                &lease,
                nameservers,
                opts,
                stop,
                emit,
            ) {
                Ok(new) => break new,
                Err(e) => {
                    warn(e);
                    sleep_until(Instant::now() + Duration::from_secs(5), stop);
                }
            }
        };
    }
}

/// DISCOVER from scratch and apply the new lease (and resolv.conf when DNS changed).
#[allow(clippy::too_many_arguments)]
fn restart(
    link: &Link,
    client: &dhcp::Client,
    nl: &mut Netlink,
    old: &Lease,
    nameservers: &[Ipv4Addr],
    opts: &Options,
    stop: &Arc<AtomicBool>,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<Lease> {
    let sock = dhcp::socket::PacketTransport::open(link.index)?;
    let mut t = Cancellable {
        inner: sock,
        cancel: stop.clone(),
    };
    let new = dhcp::acquire(
        &mut t,
        client,
        &opts.dhcp_timing,
        Instant::now() + opts.dhcp_timeout,
        emit,
    )?;
    let mtu = new.mtu.map(u32::from);
    apply_address(
        nl,
        link,
        new.address,
        new.prefix_len,
        &new.routes(),
        mtu,
        emit,
    )?;
    if new.dns != old.dns || new.search_domains() != old.search_domains() {
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
    Ok(new)
}
