//! The two DHCP transports.
//!
//! - [`PacketTransport`]: before the NIC has an address. An `AF_PACKET`/`SOCK_DGRAM` socket
//!   bound to one interface with a classic BPF filter that only passes UDP to port 68, so
//!   the kernel hands us DHCP replies whatever the IP configuration, `rp_filter` or a
//!   missing broadcast flag. We write the IPv4 and UDP headers ourselves.
//! - [`UdpTransport`]: once bound. A plain UDP socket on port 68 tied to the device, for
//!   unicast renewals and broadcast rebinding.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::Transport;

const ETH_P_IP: u16 = 0x0800;
const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// Internet checksum (RFC 1071).
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for c in chunks {
        for &b in *c {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 + UDP headers around a DHCP payload, from `src`:68 to `dst`:67.
pub fn ip_udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = 0x10; // low delay, as other DHCP clients do
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut uc = checksum(&[&pseudo, &udp, payload]);
    if uc == 0 {
        uc = 0xffff;
    }
    udp[6..8].copy_from_slice(&uc.to_be_bytes());
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    out
}

/// The UDP payload of an IPv4 packet if it is an unfragmented datagram to port 68 with a
/// correct UDP checksum (or none, or `verify_checksum` false for offloaded packets).
pub fn dhcp_payload(pkt: &[u8], verify_checksum: bool) -> Option<&[u8]> {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if ihl < 20 || total > pkt.len() || total < ihl + 8 || frag & 0x3fff != 0 {
        return None;
    }
    let udp = &pkt[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != CLIENT_PORT {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return None;
    }
    if verify_checksum && udp[6..8] != [0, 0] {
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&pkt[12..20]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(ulen as u16).to_be_bytes());
        if checksum(&[&pseudo, &udp[..ulen]]) != 0 {
            return None;
        }
    }
    Some(&udp[8..ulen])
}

/// Classic BPF for an `AF_PACKET`/`SOCK_DGRAM` socket (data starts at the IP header):
/// accept IPv4 UDP, unfragmented, destination port 68; drop everything else.
fn build_filter() -> Vec<libc::sock_filter> {
    let s = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LDB_ABS: u16 = 0x30; // BPF_LD|BPF_B|BPF_ABS
    const LDH_ABS: u16 = 0x28; // BPF_LD|BPF_H|BPF_ABS
    const LDXB_MSH: u16 = 0xb1; // BPF_LDX|BPF_B|BPF_MSH: X = 4*(P[k]&0xf)
    const LDH_IND: u16 = 0x48; // BPF_LD|BPF_H|BPF_IND
    const JEQ_K: u16 = 0x15; // BPF_JMP|BPF_JEQ|BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP|BPF_JSET|BPF_K
    const RET_K: u16 = 0x06; // BPF_RET|BPF_K
    vec![
        s(LDB_ABS, 0, 0, 9),                    // 0: A = IP protocol
        s(JEQ_K, 0, 6, 17),                     // 1: UDP? else -> 8
        s(LDH_ABS, 0, 0, 6),                    // 2: A = flags + fragment offset
        s(JSET_K, 4, 0, 0x1fff),                // 3: a fragment? -> 8
        s(LDXB_MSH, 0, 0, 0),                   // 4: X = IP header length
        s(LDH_IND, 0, 0, 2),                    // 5: A = UDP destination port
        s(JEQ_K, 0, 1, u32::from(CLIENT_PORT)), // 6: port 68? else -> 8
        s(RET_K, 0, 0, 0xffff),                 // 7: accept
        s(RET_K, 0, 0, 0),                      // 8: drop
    ]
}

/// DHCP over a packet socket on one interface (INIT/SELECTING/REQUESTING).
#[derive(Debug)]
pub struct PacketTransport {
    fd: OwnedFd,
    ifindex: i32,
    /// Link-layer source of the last payload returned by `recv`: the server's (or relay's)
    /// MAC once a lease is acknowledged.
    last_peer_mac: Option<[u8; 6]>,
}

fn last_os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl PacketTransport {
    /// Opens the socket on interface `ifindex` (needs CAP_NET_RAW).
    pub fn open(ifindex: u32) -> io::Result<PacketTransport> {
        let proto = ETH_P_IP.to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(last_os_error("opening packet socket"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = ifindex as i32;
        // Filter first, so nothing unwanted is queued between bind and attach.
        let mut prog = build_filter();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `prog`, which lives across the call; the kernel copies it.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            )
        };
        if r < 0 {
            return Err(last_os_error("attaching BPF filter"));
        }
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the length given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(last_os_error("enabling PACKET_AUXDATA"));
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed matches it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(last_os_error("binding packet socket"));
        }
        Ok(PacketTransport {
            fd,
            ifindex,
            last_peer_mac: None,
        })
    }
}

impl Transport for PacketTransport {
    fn send(&mut self, payload: &[u8], to: Ipv4Addr) -> io::Result<()> {
        self.send_frame(payload, Ipv4Addr::UNSPECIFIED, to, [0xff; 6])
    }

    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        if !wait_readable(&self.fd, timeout)? {
            return Ok(None);
        }
        let mut buf = vec![0u8; 2048];
        match self.recv_packet(&mut buf) {
            Ok((n, checksum_ready)) => {
                buf.truncate(n);
                Ok(dhcp_payload(&buf, checksum_ready).map(<[u8]>::to_vec))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("receiving on packet socket: {e}"),
            )),
        }
    }
}

impl PacketTransport {
    /// The link-layer source of the last payload `recv` returned.
    pub fn last_peer_mac(&self) -> Option<[u8; 6]> {
        self.last_peer_mac
    }

    /// Sends a DHCP payload in an IPv4/UDP packet from `src`:68 to `dst`:67, in a frame to
    /// `dst_mac` (broadcast before we have an address; the server's MAC for a RELEASE).
    pub fn send_frame(
        &mut self,
        payload: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        dst_mac: [u8; 6],
    ) -> io::Result<()> {
        let pkt = ip_udp_packet(src, dst, payload);
        // SAFETY: all-zero sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_IP.to_be();
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst_mac);
        // SAFETY: buffer and address are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(last_os_error("sending on packet socket"));
        }
        Ok(())
    }

    /// Receives one packet; the flag is false when the kernel says the checksum was not
    /// computed yet (TP_STATUS_CSUMNOTREADY: offloaded, e.g. on veth or virtio from the
    /// same host), in which case the UDP checksum field cannot be checked.
    fn recv_packet(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        // SAFETY: msghdr is plain old data; all-zero is valid and the fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at `iov` (over `buf`) and `control`, all live across the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if from.sll_halen == 6 {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&from.sll_addr[..6]);
            self.last_peer_mac = Some(mac);
        }
        let mut checksum_ready = true;
        // SAFETY: the CMSG_* helpers walk the control buffer the kernel just filled, bounded
        // by msg_controllen; the payload is read unaligned as a u32 (tp_status comes first).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let status = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>());
                    checksum_ready = status & libc::TP_STATUS_CSUMNOTREADY == 0;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok((n as usize, checksum_ready))
    }
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// DHCP over UDP once the leased address is on the link (RENEWING/REBINDING).
#[derive(Debug)]
pub struct UdpTransport {
    sock: UdpSocket,
}

impl UdpTransport {
    /// Binds port 68 on `ifname`, which holds the leased `address`.
    pub fn open(ifname: &str, address: Ipv4Addr) -> io::Result<UdpTransport> {
        let sock = rustix::net::socket_with(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::sockopt::set_socket_reuseaddr(&sock, true)?;
        rustix::net::sockopt::set_socket_broadcast(&sock, true)?;
        let name = ifname.as_bytes();
        // SAFETY: `name` is valid for `name.len()` bytes during the call.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as u32,
            )
        };
        if r < 0 {
            return Err(last_os_error(&format!("binding UDP socket to {ifname}")));
        }
        // Bound to the wildcard (but to the device) so broadcast answers reach us too:
        // servers such as dnsmasq broadcast their NAKs.
        rustix::net::bind(
            &sock,
            &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT),
        )
        .map_err(|e| {
            io::Error::other(format!("binding 0.0.0.0:68 on {ifname} ({address}): {e}"))
        })?;
        Ok(UdpTransport {
            sock: UdpSocket::from(sock),
        })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, payload: &[u8], to: Ipv4Addr) -> io::Result<()> {
        self.sock
            .send_to(payload, SocketAddrV4::new(to, SERVER_PORT))
            .map(|_| ())
    }

    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 2048];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_round_trip_and_checksums() {
        let payload = b"hello dhcp, odd length!";
        let mut p = ip_udp_packet(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, payload);
        assert_eq!(checksum(&[&p[..20]]), 0, "IP header checksum verifies");
        // Our own packet goes to port 67, so the reader (port 68) rejects it...
        assert_eq!(dhcp_payload(&p, true), None);
        // ...but with the ports swapped (a server's reply) it is accepted, checksum and all.
        p.swap(20, 22);
        p.swap(21, 23);
        assert_eq!(dhcp_payload(&p, true), Some(&payload[..]));
        let mut bad = p.clone();
        bad[30] ^= 1;
        assert_eq!(
            dhcp_payload(&bad, true),
            None,
            "corrupt payload fails the UDP checksum"
        );
        assert!(
            dhcp_payload(&bad, false).is_some(),
            "offloaded checksum: not checked"
        );
        let mut nock = p.clone();
        nock[26] = 0;
        nock[27] = 0;
        assert_eq!(
            dhcp_payload(&nock, true),
            Some(&payload[..]),
            "no UDP checksum is allowed"
        );
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(dhcp_payload(&frag, true), None);
        assert_eq!(dhcp_payload(&p[..25], true), None);
    }

    /// A tiny classic-BPF interpreter for the opcodes the filter uses.
    fn run_bpf(f: &[libc::sock_filter], p: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0usize, 0usize);
        let be16 = |o: usize| u32::from(u16::from_be_bytes([p[o], p[o + 1]]));
        loop {
            let i = &f[pc];
            let k = i.k as usize;
            pc += 1;
            match i.code {
                0x30 => a = u32::from(p[k]),
                0x28 => a = be16(k),
                0xb1 => x = 4 * usize::from(p[k] & 0xf),
                0x48 => a = be16(x + k),
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                0x06 => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn filter_passes_only_udp_to_68() {
        let f = build_filter();
        let mut reply = ip_udp_packet(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::BROADCAST, b"x");
        reply.swap(20, 22);
        reply.swap(21, 23);
        assert_eq!(run_bpf(&f, &reply), 0xffff);
        let own = ip_udp_packet(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"x");
        assert_eq!(run_bpf(&f, &own), 0, "our own request (to 67) is dropped");
        let mut tcp = reply.clone();
        tcp[9] = 6;
        assert_eq!(run_bpf(&f, &tcp), 0);
        let mut frag = reply.clone();
        frag[7] = 1;
        assert_eq!(run_bpf(&f, &frag), 0);
        // IP options shift the UDP header: the filter follows the header length.
        let mut opts = reply[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&reply[20..]);
        assert_eq!(run_bpf(&f, &opts), 0xffff);
    }
}
