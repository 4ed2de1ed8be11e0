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
