//! rtnetlink, synchronously: list links, set them up, set MTU, create VLANs, add and flush
//! IPv4 addresses and routes.
//!
//! Messages are built with `netlink-packet-route` and sent over a blocking `netlink-sys`
//! socket; every request asks for an ACK so kernel errors come back with the request that
//! caused them.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::cmdline::MacAddr;

/// A network link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    /// ARPHRD_ETHER (includes VLANs, bridges, bonds: check `kind` too).
    pub ethernet: bool,
    /// rtnetlink "kind" (`vlan`, `veth`, `bridge`...); `None` for physical NICs.
    pub kind: Option<String>,
    pub up: bool,
    /// IFF_LOWER_UP: the link has carrier.
    pub carrier: bool,
    pub mtu: u32,
}

/// An IPv4 route as listed by [`Netlink::routes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// A blocking rtnetlink socket.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

impl Netlink {
    /// Opens a rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> anyhow::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE).context("opening rtnetlink socket")?;
        sock.bind_auto().context("binding rtnetlink socket")?;
        sock.connect(&SocketAddr::new(0, 0))
            .context("connecting rtnetlink socket")?;
        Ok(Netlink { sock, seq: 1 })
    }

    /// Sends one request and collects the replies until ACK/DONE.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .context("sending rtnetlink request")?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .sock
                .recv_from_full()
                .context("reading rtnetlink reply")?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                if len < 16 || off + len > data.len() {
                    bail!("malformed rtnetlink reply");
                }
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len])
                        .context("decoding rtnetlink reply")?;
                off += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => {
                                Err(std::io::Error::from_raw_os_error(-code.get()).into())
                            }
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    // Dumps end with DONE, other requests with the ACK (an empty Error).
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// All links.
    pub fn links(&mut self) -> anyhow::Result<Vec<Link>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(&l)),
                _ => None,
            })
            .collect())
    }

    /// One link by name.
    pub fn link(&mut self, name: &str) -> anyhow::Result<Link> {
        self.links()?
            .into_iter()
            .find(|l| l.name == name)
            .with_context(|| format!("no network interface named {name}"))
    }

    fn set_link(&mut self, index: u32, up: bool, mtu: Option<u32>) -> anyhow::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)?;
        Ok(())
    }

    /// `ip link set <index> up`.
    pub fn set_up(&mut self, index: u32) -> anyhow::Result<()> {
        self.set_link(index, true, None)
            .with_context(|| format!("setting link {index} up"))
    }

    /// `ip link set <index> mtu <mtu>`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> anyhow::Result<()> {
        self.set_link(index, false, Some(mtu))
            .with_context(|| format!("setting MTU {mtu} on link {index}"))
    }

    /// `ip link add link <parent> name <name> type vlan id <id>`; an existing link of that
    /// name is left alone.
    pub fn add_vlan(&mut self, name: &str, parent: u32, id: u16) -> anyhow::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.push(LinkAttribute::Link(parent));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
        ]));
        match self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(e.context(format!("creating VLAN {name} (id {id}) on link {parent}"))),
        }
    }

    /// Adds (or refreshes) `address/prefix_len` on a link.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> anyhow::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix_len;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(address.into()));
        m.attributes.push(AddressAttribute::Address(address.into()));
        if prefix_len < 31 {
            let host = u32::MAX >> prefix_len;
            m.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                    u32::from(address) | host,
                )));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .with_context(|| format!("adding {address}/{prefix_len} to link {index}"))?;
        Ok(())
    }

    /// IPv4 addresses on a link, with prefix lengths.
    pub fn addresses(&mut self, index: u32) -> anyhow::Result<Vec<(Ipv4Addr, u8)>> {
        let mut q = AddressMessage::default();
        q.header.family = AddressFamily::Inet;
        let msgs = self.request(RouteNetlinkMessage::GetAddress(q), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in msgs {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                if a.header.index != index {
                    continue;
                }
                for attr in &a.attributes {
                    if let AddressAttribute::Local(std::net::IpAddr::V4(ip)) = attr {
                        out.push((*ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes one address (its routes go with it).
    pub fn del_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> anyhow::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix_len;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(address.into()));
        self.request(RouteNetlinkMessage::DelAddress(m), NLM_F_ACK)
            .with_context(|| format!("removing {address}/{prefix_len} from link {index}"))?;
        Ok(())
    }

    /// Adds or replaces a route in the main table. A zero gateway means on-link.
    pub fn add_route(
        &mut self,
        index: u32,
        destination: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        source: Option<Ipv4Addr>,
    ) -> anyhow::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = prefix_len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Dhcp;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if gateway.is_unspecified() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if prefix_len > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(destination)));
        }
        if !gateway.is_unspecified() {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        }
        if let Some(s) = source {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(s)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .with_context(|| {
            format!("adding route {destination}/{prefix_len} via {gateway} on link {index}")
        })?;
        Ok(())
    }

    /// IPv4 routes of the main table.
    pub fn routes(&mut self) -> anyhow::Result<Vec<RouteEntry>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let msgs = self.request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            out.push(RouteEntry {
                destination: dst,
                prefix_len: r.header.destination_prefix_length,
                gateway: gw,
                oif,
            });
        }
        Ok(out)
    }
}

/// Link change notifications (rtnetlink multicast group RTNLGRP_LINK).
pub struct LinkWatch {
    sock: Socket,
}

impl std::fmt::Debug for LinkWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkWatch")
    }
}

impl LinkWatch {
    /// Subscribes to link changes in the calling thread's network namespace.
    pub fn open() -> anyhow::Result<LinkWatch> {
        const RTNLGRP_LINK: u32 = 1;
        let mut sock = Socket::new(NETLINK_ROUTE).context("opening rtnetlink socket")?;
        sock.bind_auto().context("binding rtnetlink socket")?;
        sock.add_membership(RTNLGRP_LINK)
            .context("subscribing to link changes")?;
        Ok(LinkWatch { sock })
    }

    /// Waits up to `timeout` for notifications and returns the links they describe (empty
    /// on timeout). Deleted links are not reported.
    pub fn next(&mut self, timeout: std::time::Duration) -> anyhow::Result<Vec<Link>> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Ok(_) => {}
            Err(e) => return Err(std::io::Error::from(e)).context("waiting for link changes"),
        }
        let (data, _) = self.sock.recv_from_full().context("reading link changes")?;
        let mut out = Vec::new();
        let mut off = 0;
        while off + 16 <= data.len() {
            let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                as usize;
            if len < 16 || off + len > data.len() {
                break;
            }
            if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len])
                && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = m.payload
            {
                out.push(link_from(&l));
            }
            off += (len + 3) & !3;
        }
        Ok(out)
    }
}

fn is_errno(e: &anyhow::Error, errno: i32) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.raw_os_error() == Some(errno))
}

fn link_from(l: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mac = None;
    let mut kind = None;
    let mut mtu = 0;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => {
                mac = Some(MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]));
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Link {
        index: l.header.index,
        name,
        mac,
        ethernet: l.header.link_layer_type == LinkLayerType::Ether,
        kind,
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
        mtu,
    }
}
