//! DHCPv4 client: message building and checking, the lease, and the exchanges
//! (DISCOVER/OFFER/REQUEST/ACK, renew, rebind) over any [`Transport`].
//!
//! The exchanges are plain blocking functions driven by timeouts, so they run on one thread
//! per NIC at bring-up and on one background thread for renewals. The real transports (a
//! packet socket before the machine has an address, a UDP socket after) live in [`socket`];
//! tests drive the same code with an in-memory server.

pub mod socket;
pub mod wire;

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::events::NetEvent;
use wire::{ClasslessRoute, Message, MessageType, opt};

/// The vendor class identifier (option 60) Kiln sends, so DHCP servers can tell the
/// installer from the installed system.
pub const VENDOR_CLASS: &str = "kiln-agent";

/// Options asked for in option 55.
pub const REQUESTED_OPTIONS: [u8; 13] = [
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS,
    opt::HOSTNAME,
    opt::DOMAIN_NAME,
    opt::MTU,
    opt::BROADCAST,
    opt::NTP,
    opt::LEASE_TIME,
    opt::T1,
    opt::T2,
    opt::DOMAIN_SEARCH,
    opt::CLASSLESS_ROUTES,
];

/// Who is asking: the NIC's name and MAC.
#[derive(Debug, Clone)]
pub struct Client {
    pub ifname: String,
    pub mac: [u8; 6],
}

/// A moves-through-time knob set; tests shrink it.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First retransmission delay while selecting; doubles up to `max_retransmit`.
    pub first_retransmit: Duration,
    pub max_retransmit: Duration,
    /// REQUESTs sent before going back to DISCOVER.
    pub request_tries: u32,
    /// Lower bound for retransmissions while renewing/rebinding (RFC 2131 says 60 s).
    pub min_renew_retransmit: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            // Faster than RFC 2131's 4 s: boot time matters and we are the only client.
            first_retransmit: Duration::from_secs(1),
            max_retransmit: Duration::from_secs(8),
            request_tries: 4,
            min_renew_retransmit: Duration::from_secs(60),
        }
    }
}

/// What a lease gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Server identifier (option 54).
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub classless_routes: Vec<ClasslessRoute>,
    pub hostname: Option<String>,
    /// Seconds; `u32::MAX` is infinite.
    pub lease_secs: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
}

impl Lease {
    /// Builds a lease from a DHCPACK (or OFFER, for display).
    pub fn from_message(ifname: &str, m: &Message) -> Result<Lease, String> {
        if m.yiaddr.is_unspecified() || m.yiaddr.is_broadcast() || m.yiaddr.is_multicast() {
            return Err(format!("offered address {} is not usable", m.yiaddr));
        }
        let server = m
            .ip(opt::SERVER_ID)
            .ok_or_else(|| "no server identifier (option 54)".to_string())?;
        let prefix_len = match m.get(opt::SUBNET_MASK) {
            Some(_) => {
                let mask = m.ip(opt::SUBNET_MASK).ok_or("subnet mask is not 4 bytes")?;
                super::cmdline::netmask_to_prefix(&mask.to_string())
                    .ok_or_else(|| format!("subnet mask {mask} is not contiguous"))?
            }
            None => 24,
        };
        let lease_secs = m.u32(opt::LEASE_TIME).unwrap_or(u32::MAX);
        let (t1, t2) = if lease_secs == u32::MAX {
            (u32::MAX, u32::MAX)
        } else {
            let t1 = m.u32(opt::T1).unwrap_or(lease_secs / 2);
            let t2 = m.u32(opt::T2).unwrap_or((lease_secs as u64 * 7 / 8) as u32);
            (t1.min(lease_secs), t2.clamp(t1.min(lease_secs), lease_secs))
        };
        let classless_routes = match m.get(opt::CLASSLESS_ROUTES) {
            Some(v) => wire::decode_classless_routes(v).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let search = match m.get(opt::DOMAIN_SEARCH) {
            Some(v) => wire::decode_domain_search(v).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let mtu = m.u16(opt::MTU).filter(|m| *m >= 68);
        Ok(Lease {
            ifname: ifname.to_owned(),
            address: m.yiaddr,
            prefix_len,
            server,
            routers: m.ips(opt::ROUTER),
            dns: m.ips(opt::DNS),
            domain: m.text(opt::DOMAIN_NAME).filter(|s| !s.is_empty()),
            search,
            ntp: m.ips(opt::NTP),
            mtu,
            classless_routes,
            hostname: m
                .text(opt::HOSTNAME)
                .filter(|h| super::cmdline::valid_hostname(h)),
            lease_secs,
            t1_secs: t1,
            t2_secs: t2,
        })
    }

    /// Routes to install. RFC 3442: when option 121 is present the router option is ignored;
    /// otherwise the first router becomes the default route.
    pub fn routes(&self) -> Vec<ClasslessRoute> {
        if !self.classless_routes.is_empty() {
            return self.classless_routes.clone();
        }
        self.routers
            .first()
            .map(|g| ClasslessRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: *g,
            })
            .into_iter()
            .collect()
    }

    /// The default gateway, if any route is a default route.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routes()
            .iter()
            .find(|r| r.prefix_len == 0 && !r.gateway.is_unspecified())
            .map(|r| r.gateway)
    }

    /// Search list: option 119, else the domain name (option 15).
    pub fn search_domains(&self) -> Vec<String> {
        if !self.search.is_empty() {
            self.search.clone()
        } else {
            self.domain.iter().cloned().collect()
        }
    }
}

/// The transport DHCP messages travel over.
pub trait Transport {
    /// Sends a DHCP payload to `to`:67 (255.255.255.255 or a server).
    fn send(&mut self, payload: &[u8], to: Ipv4Addr) -> io::Result<()>;
    /// Waits up to `timeout` for one DHCP payload sent to port 68.
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>>;
}

/// A fresh transaction id from the kernel's RNG.
pub fn new_xid() -> u32 {
    let mut b = [0u8; 4];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::INSECURE) != Ok(4) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16);
    }
    u32::from_ne_bytes(b)
}

fn base(c: &Client, xid: u32, kind: MessageType) -> Message {
    let mut m = Message::request(xid, c.mac);
    m.push(opt::MESSAGE_TYPE, [kind as u8]);
    let mut id = vec![1u8]; // RFC 2132 client identifier: type 1 (Ethernet) + MAC
    id.extend_from_slice(&c.mac);
    m.push(opt::CLIENT_ID, id);
    m.push(opt::MAX_SIZE, 1500u16.to_be_bytes());
    m.push(opt::VENDOR_CLASS, VENDOR_CLASS.as_bytes());
    m.push(opt::PARAM_REQUEST, REQUESTED_OPTIONS);
    m
}

/// DHCPDISCOVER.
pub fn discover(c: &Client, xid: u32) -> Message {
    base(c, xid, MessageType::Discover)
}

/// DHCPREQUEST answering an offer (SELECTING state).
pub fn request_for_offer(c: &Client, xid: u32, offer: &Message) -> Message {
    let mut m = base(c, xid, MessageType::Request);
    m.push(opt::REQUESTED_IP, offer.yiaddr.octets());
    if let Some(s) = offer.ip(opt::SERVER_ID) {
        m.push(opt::SERVER_ID, s.octets());
    }
    m
}

/// DHCPREQUEST extending a lease (RENEWING/REBINDING: `ciaddr` set, no server id).
pub fn request_renewal(c: &Client, xid: u32, lease: &Lease) -> Message {
    let mut m = base(c, xid, MessageType::Request);
    m.ciaddr = lease.address;
    m.flags = 0; // we have an address: answers come unicast
    m
}

/// DHCPRELEASE (RFC 2131 table 5: `ciaddr`, server id and client id only).
pub fn release(c: &Client, lease: &Lease) -> Message {
    let mut m = Message::request(new_xid(), c.mac);
    m.flags = 0;
    m.ciaddr = lease.address;
    m.push(opt::MESSAGE_TYPE, [MessageType::Release as u8]);
    m.push(opt::SERVER_ID, lease.server.octets());
    let mut id = vec![1u8];
    id.extend_from_slice(&c.mac);
    m.push(opt::CLIENT_ID, id);
    m
}

/// A server's answer to us.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Offer(Box<Message>),
    Ack(Box<Lease>),
    Nak {
        server: Ipv4Addr,
        message: Option<String>,
    },
}

/// Checks that `bytes` is a reply to our transaction and says what it is. Anything else
/// (other clients' traffic, garbage, our own broadcasts) is `None`.
pub fn classify(c: &Client, xid: u32, bytes: &[u8]) -> Option<Reply> {
    let m = Message::decode(bytes).ok()?;
    if m.op != 2 || m.xid != xid || m.chaddr != c.mac {
        return None;
    }
    match m.message_type()? {
        MessageType::Offer => {
            if m.ip(opt::SERVER_ID).is_none() || m.yiaddr.is_unspecified() {
                return None;
            }
            Some(Reply::Offer(Box::new(m)))
        }
        MessageType::Ack => Lease::from_message(&c.ifname, &m)
            .ok()
            .map(|l| Reply::Ack(Box::new(l))),
        MessageType::Nak => Some(Reply::Nak {
            server: m.ip(opt::SERVER_ID).unwrap_or(Ipv4Addr::UNSPECIFIED),
            message: m.text(opt::MESSAGE),
        }),
        _ => None,
    }
}

/// Sends `msg` and waits for a reply accepted by `want`, resending after each `waits`
/// interval. Returns the first accepted reply, or `None` when every wait passed.
fn exchange<T>(
    t: &mut dyn Transport,
    c: &Client,
    msg: &Message,
    to: Ipv4Addr,
    waits: &[Duration],
    mut want: impl FnMut(Reply) -> Option<T>,
) -> io::Result<Option<T>> {
    let bytes = msg.encode();
    for wait in waits {
        t.send(&bytes, to).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: sending DHCP message: {e}", c.ifname))
        })?;
        let until = Instant::now() + *wait;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let Some(b) = t.recv(until - now)? else {
                continue;
            };
            if let Some(r) = classify(c, msg.xid, &b).and_then(&mut want) {
                return Ok(Some(r));
            }
        }
    }
    Ok(None)
}

/// Runs DISCOVER/OFFER/REQUEST/ACK until a lease is acknowledged or `deadline` passes. A NAK
/// or an unanswered REQUEST starts over with a new transaction.
pub fn acquire(
    t: &mut dyn Transport,
    c: &Client,
    timing: &Timing,
    deadline: Instant,
    emit: &dyn Fn(NetEvent),
) -> anyhow::Result<Lease> {
    let mut waits = Vec::new();
    let mut w = timing.first_retransmit;
    while waits.iter().sum::<Duration>() < deadline.saturating_duration_since(Instant::now()) {
        waits.push(w);
        w = (w * 2).min(timing.max_retransmit);
    }
    loop {
        if Instant::now() >= deadline {
            anyhow::bail!("{}: no DHCP lease before the timeout", c.ifname);
        }
        let xid = new_xid();
        emit(NetEvent::DhcpDiscover {
            ifname: c.ifname.clone(),
            xid,
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let disc_waits = clip(&waits, left);
        let offer = exchange(
            t,
            c,
            &discover(c, xid),
            Ipv4Addr::BROADCAST,
            &disc_waits,
            |r| match r {
                Reply::Offer(m) => Some(m),
                _ => None,
            },
        )?;
        let Some(offer) = offer else { continue };
        let server = offer.ip(opt::SERVER_ID).unwrap_or(Ipv4Addr::UNSPECIFIED);
        emit(NetEvent::DhcpOffer {
            ifname: c.ifname.clone(),
            server,
            address: offer.yiaddr,
        });
        emit(NetEvent::DhcpRequest {
            ifname: c.ifname.clone(),
            server,
            address: offer.yiaddr,
        });
        let req_waits = vec![timing.first_retransmit; timing.request_tries as usize];
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = exchange(
            t,
            c,
            &request_for_offer(c, xid, &offer),
            Ipv4Addr::BROADCAST,
            &clip(&req_waits, left),
            |r| match r {
                Reply::Ack(l) if l.address == offer.yiaddr => Some(Ok(l)),
                Reply::Nak { server: s, message } if s == server || s.is_unspecified() => {
                    Some(Err((s, message)))
                }
                _ => None,
            },
        )?;
        match answer {
            Some(Ok(lease)) => {
                emit(NetEvent::DhcpAck {
                    ifname: c.ifname.clone(),
                    server: lease.server,
                    address: lease.address,
                    lease_secs: lease.lease_secs,
                });
                return Ok(*lease);
            }
            Some(Err((server, message))) => {
                emit(NetEvent::DhcpNak {
                    ifname: c.ifname.clone(),
                    server,
                    message,
                });
            }
            None => {}
        }
    }
}

/// Waits that fit in `left` (the last one shortened), at least one.
fn clip(waits: &[Duration], left: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut sum = Duration::ZERO;
    for w in waits {
        if sum >= left {
            break;
        }
        let w = (*w).min(left - sum);
        out.push(w);
        sum += w;
    }
    if out.is_empty() {
        out.push(left.max(Duration::from_millis(1)));
    }
    out
}

/// The result of trying to extend a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Renewal {
    Extended(Box<Lease>),
    Refused {
        server: Ipv4Addr,
        message: Option<String>,
    },
    NoAnswer,
}

/// RENEWING (unicast to the server) or REBINDING (broadcast) until `until`, retransmitting at
/// half the remaining time but no more often than `timing.min_renew_retransmit`.
pub fn renew(
    t: &mut dyn Transport,
    c: &Client,
    lease: &Lease,
    to: Ipv4Addr,
    until: Instant,
    timing: &Timing,
) -> io::Result<Renewal> {
    let xid = new_xid();
    let msg = request_renewal(c, xid, lease);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Renewal::NoAnswer);
        }
        let wait = (left / 2).max(timing.min_renew_retransmit).min(left);
        let r = exchange(t, c, &msg, to, &[wait], |r| match r {
            Reply::Ack(l) if l.address == lease.address => Some(Renewal::Extended(l)),
            Reply::Nak { server, message } => Some(Renewal::Refused { server, message }),
            _ => None,
        })?;
        if let Some(r) = r {
            return Ok(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];
    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);

    fn client() -> Client {
        Client {
            ifname: "eth0".into(),
            mac: MAC,
        }
    }

    /// What a fake server does with each request it gets.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        Ignore,
        Offer,
        Ack,
        Nak,
        /// Answer with a wrong xid, then a right one.
        WrongXidThenAck,
    }

    /// An in-memory server following a script: one action per received client message.
    struct FakeServer {
        script: VecDeque<Act>,
        inbox: VecDeque<Vec<u8>>,
        seen: Vec<(Message, Ipv4Addr)>,
    }

    fn reply(req: &Message, kind: MessageType) -> Message {
        let mut m = Message::request(req.xid, req.chaddr);
        m.op = 2;
        m.yiaddr = ADDR;
        m.push(opt::MESSAGE_TYPE, [kind as u8]);
        m.push(opt::SERVER_ID, SERVER.octets());
        if kind != MessageType::Nak {
            m.push(opt::SUBNET_MASK, [255, 255, 255, 0]);
            m.push(opt::ROUTER, SERVER.octets());
            m.push(opt::DNS, [192, 0, 2, 53, 192, 0, 2, 54]);
            m.push(opt::NTP, [192, 0, 2, 123]);
            m.push(opt::LEASE_TIME, 3600u32.to_be_bytes());
            m.push(opt::MTU, 9000u16.to_be_bytes());
            m.push(opt::DOMAIN_NAME, b"example.test".to_vec());
            m.push(
                opt::DOMAIN_SEARCH,
                wire::encode_domain_search(&["lab.example.test", "example.test"]),
            );
            m.push(
                opt::CLASSLESS_ROUTES,
                [0, 192, 0, 2, 254, 16, 10, 9, 192, 0, 2, 2],
            );
            m.push(opt::HOSTNAME, b"node7".to_vec());
        } else {
            m.yiaddr = Ipv4Addr::UNSPECIFIED;
            m.push(opt::MESSAGE, b"wrong network".to_vec());
        }
        m
    }

    impl Transport for FakeServer {
        fn send(&mut self, payload: &[u8], to: Ipv4Addr) -> io::Result<()> {
            let req = Message::decode(payload).unwrap();
            self.seen.push((req.clone(), to));
            match self.script.pop_front().unwrap_or(Act::Ignore) {
                Act::Ignore => {}
                Act::Offer => self
                    .inbox
                    .push_back(reply(&req, MessageType::Offer).encode()),
                Act::Ack => self.inbox.push_back(reply(&req, MessageType::Ack).encode()),
                Act::Nak => self.inbox.push_back(reply(&req, MessageType::Nak).encode()),
                Act::WrongXidThenAck => {
                    let mut wrong = reply(&req, MessageType::Ack);
                    wrong.xid ^= 1;
                    self.inbox.push_back(wrong.encode());
                    self.inbox.push_back(vec![1, 2, 3]); // garbage
                    self.inbox.push_back(reply(&req, MessageType::Ack).encode());
                }
            }
            Ok(())
        }
        fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
            match self.inbox.pop_front() {
                Some(b) => Ok(Some(b)),
                None => {
                    std::thread::sleep(timeout.min(Duration::from_millis(2)));
                    Ok(None)
                }
            }
        }
    }

    fn fake(script: &[Act]) -> FakeServer {
        FakeServer {
            script: script.iter().copied().collect(),
            inbox: VecDeque::new(),
            seen: vec![],
        }
    }

    fn fast() -> Timing {
        Timing {
            first_retransmit: Duration::from_millis(10),
            max_retransmit: Duration::from_millis(40),
            request_tries: 2,
            min_renew_retransmit: Duration::from_millis(10),
        }
    }

    fn run(script: &[Act]) -> (anyhow::Result<Lease>, FakeServer, Vec<NetEvent>) {
        let mut s = fake(script);
        let events = std::cell::RefCell::new(Vec::new());
        let r = acquire(
            &mut s,
            &client(),
            &fast(),
            Instant::now() + Duration::from_millis(500),
            &|e| events.borrow_mut().push(e),
        );
        (r, s, events.into_inner())
    }

    #[test]
    fn discover_carries_identity_and_requests() {
        let m = discover(&client(), 7);
        assert_eq!(m.message_type(), Some(MessageType::Discover));
        assert_eq!(
            m.get(opt::CLIENT_ID),
            Some(&[1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc][..])
        );
        assert_eq!(m.text(opt::VENDOR_CLASS).as_deref(), Some("kiln-agent"));
        let prl = m.get(opt::PARAM_REQUEST).unwrap();
        for o in [1, 3, 6, 12, 15, 26, 42, 119, 121] {
            assert!(prl.contains(&o), "option {o} not requested");
        }
        assert_eq!(
            m.flags, 0x8000,
            "broadcast flag: we cannot receive unicast yet"
        );
    }

    #[test]
    fn full_exchange_gives_lease() {
        let (r, s, ev) = run(&[Act::Offer, Act::Ack]);
        let l = r.unwrap();
        assert_eq!(l.address, ADDR);
        assert_eq!(l.prefix_len, 24);
        assert_eq!(l.server, SERVER);
        assert_eq!(
            l.dns,
            vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)]
        );
        assert_eq!(l.ntp, vec![Ipv4Addr::new(192, 0, 2, 123)]);
        assert_eq!(l.mtu, Some(9000));
        assert_eq!(l.search_domains(), vec!["lab.example.test", "example.test"]);
        assert_eq!(l.hostname.as_deref(), Some("node7"));
        assert_eq!((l.lease_secs, l.t1_secs, l.t2_secs), (3600, 1800, 3150));
        // Option 121 present: the router option is ignored (RFC 3442).
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 0, 2, 254)));
        assert_eq!(l.routes().len(), 2);
        // The REQUEST names the offered address and the server, same xid as the DISCOVER.
        let (req, to) = &s.seen[1];
        assert_eq!(*to, Ipv4Addr::BROADCAST);
        assert_eq!(req.message_type(), Some(MessageType::Request));
        assert_eq!(req.ip(opt::REQUESTED_IP), Some(ADDR));
        assert_eq!(req.ip(opt::SERVER_ID), Some(SERVER));
        assert_eq!(req.xid, s.seen[0].0.xid);
        let names: Vec<String> = ev.iter().map(|e| e.to_string()).collect();
        assert!(
            names[1].contains("offer of 192.0.2.50 from 192.0.2.1"),
            "{names:?}"
        );
        assert!(names[3].contains("lease 3600 s"), "{names:?}");
    }

    #[test]
    fn retransmits_when_unanswered() {
        let (r, s, _) = run(&[Act::Ignore, Act::Ignore, Act::Offer, Act::Ignore, Act::Ack]);
        assert_eq!(r.unwrap().address, ADDR);
        let kinds: Vec<_> = s
            .seen
            .iter()
            .map(|(m, _)| m.message_type().unwrap())
            .collect();
        use MessageType::*;
        assert_eq!(kinds, vec![Discover, Discover, Discover, Request, Request]);
    }

    #[test]
    fn nak_starts_over_with_new_transaction() {
        let (r, s, ev) = run(&[Act::Offer, Act::Nak, Act::Offer, Act::Ack]);
        assert_eq!(r.unwrap().address, ADDR);
        assert!(ev.iter().any(
            |e| matches!(e, NetEvent::DhcpNak { message: Some(m), .. } if m == "wrong network")
        ));
        assert_eq!(s.seen[2].0.message_type(), Some(MessageType::Discover));
        assert_ne!(s.seen[2].0.xid, s.seen[0].0.xid);
    }

    #[test]
    fn ignores_foreign_replies() {
        let (r, _, _) = run(&[Act::Offer, Act::WrongXidThenAck]);
        assert_eq!(r.unwrap().address, ADDR);
        // A reply for another MAC is not ours.
        let mut other = reply(&discover(&client(), 9), MessageType::Offer);
        other.chaddr = [1; 6];
        assert_eq!(classify(&client(), 9, &other.encode()), None);
        // Our own broadcast DISCOVER looped back is not a reply.
        assert_eq!(
            classify(&client(), 9, &discover(&client(), 9).encode()),
            None
        );
    }

    #[test]
    fn gives_up_at_deadline() {
        let start = Instant::now();
        let (r, s, _) = run(&[]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("eth0") && e.contains("no DHCP lease"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(s.seen.len() >= 3, "retransmitted {} times", s.seen.len());
    }

    #[test]
    fn renewal_outcomes() {
        let lease = run(&[Act::Offer, Act::Ack]).0.unwrap();
        let until = Instant::now() + Duration::from_millis(100);
        let mut s = fake(&[Act::Ack]);
        match renew(&mut s, &client(), &lease, SERVER, until, &fast()).unwrap() {
            Renewal::Extended(l) => assert_eq!(l.lease_secs, 3600),
            other => panic!("{other:?}"),
        }
        let (req, to) = &s.seen[0];
        assert_eq!((req.ciaddr, *to, req.flags), (ADDR, SERVER, 0));
        assert_eq!(
            req.get(opt::SERVER_ID),
            None,
            "RFC 2131: no server id while renewing"
        );
        let mut s = fake(&[Act::Nak]);
        assert!(matches!(
            renew(
                &mut s,
                &client(),
                &lease,
                Ipv4Addr::BROADCAST,
                until,
                &fast()
            )
            .unwrap(),
            Renewal::Refused { .. }
        ));
        let mut s = fake(&[]);
        assert_eq!(
            renew(&mut s, &client(), &lease, SERVER, until, &fast()).unwrap(),
            Renewal::NoAnswer
        );
        assert!(s.seen.len() >= 2, "renewal retransmitted");
    }

    #[test]
    fn release_names_address_and_server_only() {
        let lease = run(&[Act::Offer, Act::Ack]).0.unwrap();
        let m = release(&client(), &lease);
        assert_eq!(m.message_type(), Some(MessageType::Release));
        assert_eq!((m.ciaddr, m.ip(opt::SERVER_ID)), (ADDR, Some(SERVER)));
        assert_eq!(m.get(opt::PARAM_REQUEST), None);
        assert_eq!(m.get(opt::VENDOR_CLASS), None);
        assert!(m.get(opt::CLIENT_ID).is_some());
    }

    #[test]
    fn lease_without_121_uses_router_and_defaults() {
        let mut m = reply(&discover(&client(), 1), MessageType::Ack);
        m.options.retain(|(c, _)| {
            ![opt::CLASSLESS_ROUTES, opt::LEASE_TIME, opt::SUBNET_MASK].contains(c)
        });
        let l = Lease::from_message("eth0", &m).unwrap();
        assert_eq!(l.gateway(), Some(SERVER));
        assert_eq!(l.lease_secs, u32::MAX);
        assert_eq!(l.prefix_len, 24);
        m.options.retain(|(c, _)| *c != opt::SERVER_ID);
        assert!(
            Lease::from_message("eth0", &m)
                .unwrap_err()
                .contains("server identifier")
        );
    }
}
