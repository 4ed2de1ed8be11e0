//! DHCPv4 wire format (RFC 2131/2132): the fixed BOOTP header, the magic cookie and the
//! options, plus the option payload decoders Kiln needs (RFC 3397 domain search, RFC 3442
//! classless routes). Bytes in, typed out; no I/O.

use std::net::Ipv4Addr;

/// Option codes Kiln uses.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const NTP: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_REQUEST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_SIZE: u8 = 57;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(b: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match b {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const FIXED_LEN: usize = 236;

/// Why bytes are not a DHCP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("DHCP message too short ({0} bytes, need at least 240)")]
    Short(usize),
    #[error("no DHCP magic cookie")]
    NoCookie,
    #[error("DHCP option {0} runs past the end of the message")]
    Truncated(u8),
    #[error("DHCP option {code} has a bad payload: {why}")]
    BadOption { code: u8, why: &'static str },
}

/// A DHCPv4 message. Options are kept in order; a code given several times is concatenated
/// on decode (RFC 3396 long options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    /// Bit 15 = broadcast.
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Client hardware address (first 6 bytes used for Ethernet).
    pub chaddr: [u8; 6],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A BOOTREQUEST with the broadcast flag set.
    pub fn request(xid: u32, mac: [u8; 6]) -> Message {
        Message {
            op: 1,
            xid,
            secs: 0,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options: Vec::new(),
        }
    }

    /// The payload of an option, if present.
    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// Adds an option (payloads over 255 bytes are split on encode).
    pub fn push(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        self.options.push((code, value.into()));
    }

    /// Option 53.
    pub fn message_type(&self) -> Option<MessageType> {
        self.get(opt::MESSAGE_TYPE)
            .and_then(|v| v.first().copied())
            .and_then(MessageType::from_u8)
    }

    /// A single-address option.
    pub fn ip(&self, code: u8) -> Option<Ipv4Addr> {
        self.get(code)
            .filter(|v| v.len() == 4)
            .map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
    }

    /// A list-of-addresses option.
    pub fn ips(&self, code: u8) -> Vec<Ipv4Addr> {
        self.get(code)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A 32-bit option.
    pub fn u32(&self, code: u8) -> Option<u32> {
        self.get(code)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
    }

    /// A 16-bit option.
    pub fn u16(&self, code: u8) -> Option<u16> {
        self.get(code)
            .and_then(|v| <[u8; 2]>::try_from(v).ok())
            .map(u16::from_be_bytes)
    }

    /// A text option (lossy UTF-8, trailing NULs dropped).
    pub fn text(&self, code: u8) -> Option<String> {
        self.get(code)
            .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
    }

    /// Encodes the message, padded to the 300-byte BOOTP minimum.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(548);
        b.extend_from_slice(&[self.op, 1, 6, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(FIXED_LEN, 0); // chaddr padding, sname, file
        b.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            if value.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
            for chunk in value.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(opt::END);
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    /// Decodes a message.
    pub fn decode(b: &[u8]) -> Result<Message, WireError> {
        if b.len() < FIXED_LEN + 4 {
            return Err(WireError::Short(b.len()));
        }
        if b[FIXED_LEN..FIXED_LEN + 4] != MAGIC {
            return Err(WireError::NoCookie);
        }
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&b[28..34]);
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut i = FIXED_LEN + 4;
        while i < b.len() {
            let code = b[i];
            match code {
                opt::PAD => {
                    i += 1;
                    continue;
                }
                opt::END => break,
                _ => {}
            }
            let len = *b.get(i + 1).ok_or(WireError::Truncated(code))? as usize;
            let value = b
                .get(i + 2..i + 2 + len)
                .ok_or(WireError::Truncated(code))?;
            match options.iter_mut().find(|(c, _)| *c == code) {
                Some((_, v)) => v.extend_from_slice(value),
                None => options.push((code, value.to_vec())),
            }
            i += 2 + len;
        }
        Ok(Message {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr,
            options,
        })
    }
}

/// One route from option 121.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClasslessRoute {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// 0.0.0.0 means on-link.
    pub gateway: Ipv4Addr,
}

/// Decodes option 121 (RFC 3442): `width, significant destination octets, gateway`, repeated.
pub fn decode_classless_routes(v: &[u8]) -> Result<Vec<ClasslessRoute>, WireError> {
    let bad = |why| WireError::BadOption {
        code: opt::CLASSLESS_ROUTES,
        why,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let width = v[i];
        if width > 32 {
            return Err(bad("prefix width over 32"));
        }
        let n = (width as usize).div_ceil(8);
        let dst = v
            .get(i + 1..i + 1 + n)
            .ok_or(bad("truncated destination"))?;
        let gw = v
            .get(i + 1 + n..i + 5 + n)
            .ok_or(bad("truncated gateway"))?;
        let mut d = [0u8; 4];
        d[..n].copy_from_slice(dst);
        let mask = if width == 0 {
            0
        } else {
            u32::MAX << (32 - width)
        };
        out.push(ClasslessRoute {
            destination: Ipv4Addr::from(u32::from_be_bytes(d) & mask),
            prefix_len: width,
            gateway: Ipv4Addr::new(gw[0], gw[1], gw[2], gw[3]),
        });
        i += 5 + n;
    }
    Ok(out)
}

/// Decodes option 119 (RFC 3397): DNS-encoded names with compression pointers into the
/// option's own (concatenated) payload.
pub fn decode_domain_search(v: &[u8]) -> Result<Vec<String>, WireError> {
    let bad = |why| WireError::BadOption {
        code: opt::DOMAIN_SEARCH,
        why,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut labels: Vec<String> = Vec::new();
        let mut pos = i;
        let mut next = None; // where the next name starts, once a pointer was followed
        let mut jumps = 0;
        loop {
            let len = *v.get(pos).ok_or(bad("name runs past the end"))?;
            if len == 0 {
                pos += 1;
                break;
            }
            if len & 0xc0 == 0xc0 {
                let lo = *v.get(pos + 1).ok_or(bad("truncated pointer"))?;
                next.get_or_insert(pos + 2);
                pos = (((len & 0x3f) as usize) << 8) | lo as usize;
                jumps += 1;
                if jumps > 32 {
                    return Err(bad("pointer loop"));
                }
                continue;
            }
            if len & 0xc0 != 0 {
                return Err(bad("bad label length"));
            }
            let l = v
                .get(pos + 1..pos + 1 + len as usize)
                .ok_or(bad("label runs past the end"))?;
            labels.push(String::from_utf8_lossy(l).into_owned());
            pos += 1 + len as usize;
        }
        i = next.unwrap_or(pos);
        if !labels.is_empty() {
            out.push(labels.join("."));
        }
    }
    Ok(out)
}

/// Encodes names for option 119 (no compression); used by tests and fake servers.
pub fn encode_domain_search(names: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for n in names {
        for l in n.split('.').filter(|l| !l.is_empty()) {
            b.push(l.len() as u8);
            b.extend_from_slice(l.as_bytes());
        }
        b.push(0);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = Message::request(0xdeadbeef, [0x52, 0x54, 0, 1, 2, 3]);
        m.push(opt::MESSAGE_TYPE, [MessageType::Discover as u8]);
        m.push(opt::VENDOR_CLASS, b"kiln-agent".to_vec());
        m.push(opt::DOMAIN_SEARCH, vec![7u8; 300]); // split into two options on the wire
        let b = m.encode();
        assert!(b.len() >= 300);
        assert_eq!(&b[236..240], &MAGIC);
        let d = Message::decode(&b).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.message_type(), Some(MessageType::Discover));
        assert_eq!(d.text(opt::VENDOR_CLASS).as_deref(), Some("kiln-agent"));
    }

    #[test]
    fn decode_errors() {
        assert_eq!(Message::decode(&[0; 100]), Err(WireError::Short(100)));
        assert_eq!(Message::decode(&[0; 300]), Err(WireError::NoCookie));
        let mut b = Message::request(1, [0; 6]).encode();
        b.truncate(240);
        b.extend_from_slice(&[opt::DNS, 8, 1, 2, 3]);
        assert_eq!(Message::decode(&b), Err(WireError::Truncated(opt::DNS)));
    }

    #[test]
    fn classless_routes_rfc3442_examples() {
        // RFC 3442 section 2 table plus a default route.
        let v = [
            0, 10, 0, 0, 1, // 0.0.0.0/0 via 10.0.0.1
            8, 10, 10, 0, 0, 254, // 10.0.0.0/8 via 10.0.0.254
            24, 192, 168, 1, 0, 0, 0, 0, // 192.168.1.0/24 on-link
            25, 129, 210, 177, 132, 10, 0, 0, 2, // 129.210.177.128/25
        ];
        let r = decode_classless_routes(&v).unwrap();
        let want = [
            ("0.0.0.0", 0, "10.0.0.1"),
            ("10.0.0.0", 8, "10.0.0.254"),
            ("192.168.1.0", 24, "0.0.0.0"),
            ("129.210.177.128", 25, "10.0.0.2"),
        ];
        assert_eq!(r.len(), want.len());
        for (got, (d, p, g)) in r.iter().zip(want) {
            assert_eq!(
                (got.destination, got.prefix_len, got.gateway),
                (d.parse().unwrap(), p, g.parse().unwrap())
            );
        }
        assert!(decode_classless_routes(&[33, 0, 0, 0, 0]).is_err());
        assert!(decode_classless_routes(&[24, 10, 0]).is_err());
    }

    #[test]
    fn domain_search_with_compression() {
        // RFC 3397 section 3 example: eng.apple.com. and marketing.apple.com.
        let v = [
            3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9, b'm',
            b'a', b'r', b'k', b'e', b't', b'i', b'n', b'g', 0xc0, 4,
        ];
        assert_eq!(
            decode_domain_search(&v).unwrap(),
            vec![
                "eng.apple.com".to_string(),
                "marketing.apple.com".to_string()
            ]
        );
        let enc = encode_domain_search(&["lab.example", "example"]);
        assert_eq!(
            decode_domain_search(&enc).unwrap(),
            vec!["lab.example", "example"]
        );
        assert!(decode_domain_search(&[0xc0, 0]).is_err()); // points at itself
        assert!(decode_domain_search(&[5, b'a']).is_err());
    }
}
