//! Typed network events: one per step of bring-up, serde-serializable for the control plane
//! and the TUI, with a `Display` that is the plain console line.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Something that happened while bringing the network up or keeping it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NetEvent {
    /// A VLAN link was created from `vlan=`.
    VlanCreated {
        name: String,
        parent: String,
        id: u16,
    },
    /// A link got carrier.
    LinkUp {
        ifname: String,
        speed_mbps: Option<u32>,
    },
    /// A link had no carrier after the wait (or lost it).
    LinkDown { ifname: String },
    /// DHCPDISCOVER sent.
    DhcpDiscover { ifname: String, xid: u32 },
    /// DHCPOFFER received.
    DhcpOffer {
        ifname: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
    /// DHCPREQUEST sent.
    DhcpRequest {
        ifname: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
    /// DHCPACK received.
    DhcpAck {
        ifname: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
        lease_secs: u32,
    },
    /// DHCPNAK received: the client starts over.
    DhcpNak {
        ifname: String,
        server: Ipv4Addr,
        message: Option<String>,
    },
    /// A lease got on a NIC that is not used was given back.
    DhcpRelease {
        ifname: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
    /// Several NICs got leases; this one is used.
    LeaseSelected { ifname: String, reason: String },
    /// The lease was renewed (T1) or rebound (T2).
    LeaseRenewed { ifname: String, lease_secs: u32 },
    /// The lease ran out or was refused; the client starts over.
    LeaseLost { ifname: String, reason: String },
    /// Address, prefix and routes are on the link.
    AddressApplied {
        ifname: String,
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        routes: usize,
        mtu: Option<u32>,
        /// Milliseconds since the kernel started (CLOCK_BOOTTIME): boot-to-network time.
        since_boot_ms: u64,
    },
    /// resolv.conf written.
    Dns {
        servers: Vec<Ipv4Addr>,
        search: Vec<String>,
    },
    /// Hostname set.
    Hostname { name: String },
    /// The system clock was stepped.
    ClockStep { source: String, offset_ms: i64 },
    /// No time source answered; the clock was left alone.
    ClockUnset { reason: String },
    /// A non-fatal problem worth showing.
    Warning { message: String },
}

/// `+25 years`, `-3 days`, `+1.250 s`: a clock offset for people.
pub fn human_offset(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let a = ms.unsigned_abs();
    const S: u64 = 1000;
    const DAY: u64 = 86_400 * S;
    const YEAR: u64 = 365 * DAY + DAY / 4;
    let body = if a >= YEAR {
        let y = a as f64 / YEAR as f64;
        if y >= 10.0 {
            format!("{y:.0} years")
        } else {
            format!("{y:.1} years")
        }
    } else if a >= DAY {
        format!("{:.1} days", a as f64 / DAY as f64)
    } else if a >= 3600 * S {
        format!("{:.1} hours", a as f64 / (3600 * S) as f64)
    } else if a >= 60 * S {
        format!("{:.1} minutes", a as f64 / (60 * S) as f64)
    } else {
        format!("{}.{:03} s", a / S, a % S)
    };
    format!("{sign}{body}")
}

impl fmt::Display for NetEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NetEvent::*;
        match self {
            VlanCreated { name, parent, id } => write!(f, "{name}: VLAN {id} on {parent} created"),
            LinkUp {
                ifname,
                speed_mbps: Some(s),
            } => write!(f, "{ifname}: link up, {s} Mb/s"),
            LinkUp {
                ifname,
                speed_mbps: None,
            } => write!(f, "{ifname}: link up"),
            LinkDown { ifname } => write!(f, "{ifname}: no link"),
            DhcpDiscover { ifname, xid } => write!(f, "{ifname}: DHCP discover (xid {xid:#010x})"),
            DhcpOffer {
                ifname,
                server,
                address,
            } => {
                write!(f, "{ifname}: DHCP offer of {address} from {server}")
            }
            DhcpRequest {
                ifname,
                server,
                address,
            } => {
                write!(f, "{ifname}: DHCP request for {address} to {server}")
            }
            DhcpAck {
                ifname,
                server,
                address,
                lease_secs,
            } => write!(
                f,
                "{ifname}: DHCP ack {address} from {server}, lease {lease_secs} s"
            ),
            DhcpNak {
                ifname,
                server,
                message,
            } => {
                write!(f, "{ifname}: DHCP NAK from {server}")?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            DhcpRelease {
                ifname,
                server,
                address,
            } => write!(f, "{ifname}: DHCP release of unused {address} to {server}"),
            LeaseSelected { ifname, reason } => write!(f, "{ifname}: using this lease ({reason})"),
            LeaseRenewed { ifname, lease_secs } => {
                write!(f, "{ifname}: DHCP lease renewed for {lease_secs} s")
            }
            LeaseLost { ifname, reason } => {
                write!(f, "{ifname}: DHCP lease lost ({reason}), starting over")
            }
            AddressApplied { .. } => self.fmt_address(f),
            Dns { servers, search } => fmt_dns(f, servers, search),
            Hostname { name } => write!(f, "hostname set to {name}"),
            ClockStep { source, offset_ms } => {
                write!(
                    f,
                    "clock moved {} (from {source})",
                    human_offset(*offset_ms)
                )
            }
            ClockUnset { reason } => write!(f, "clock not set: {reason}"),
            Warning { message } => write!(f, "warning: {message}"),
        }
    }
}

impl NetEvent {
    /// `AddressApplied` as a line; other events write nothing.
    fn fmt_address(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NetEvent::AddressApplied {
            ifname,
            address,
            prefix_len,
            gateway,
            routes,
            mtu,
            since_boot_ms,
        } = self
        else {
            return Ok(());
        };
        write!(f, "{ifname}: address {address}/{prefix_len}")?;
        if let Some(g) = gateway {
            write!(f, " via {g}")?;
        }
        write!(f, ", {routes} route{}", if *routes == 1 { "" } else { "s" })?;
        if let Some(m) = mtu {
            write!(f, ", MTU {m}")?;
        }
        write!(
            f,
            " ({}.{:03} s after kernel start)",
            since_boot_ms / 1000,
            since_boot_ms % 1000
        )
    }
}

fn fmt_dns(f: &mut fmt::Formatter<'_>, servers: &[Ipv4Addr], search: &[String]) -> fmt::Result {
    let s: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    write!(
        f,
        "DNS servers {}",
        if s.is_empty() {
            "none".into()
        } else {
            s.join(" ")
        }
    )?;
    if !search.is_empty() {
        write!(f, ", search {}", search.join(" "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        for (ms, want) in [
            (25 * 31_557_600_000i64, "+25 years"),
            (-3 * 31_557_600_000i64 / 2, "-1.5 years"),
            (3 * 86_400_000, "+3.0 days"),
            (-1250, "-1.250 s"),
            (0, "+0.000 s"),
            (90 * 60_000, "+1.5 hours"),
        ] {
            assert_eq!(human_offset(ms), want, "{ms}");
        }
    }

    #[test]
    fn console_lines_and_json() {
        let e = NetEvent::DhcpAck {
            ifname: "eth0".into(),
            server: Ipv4Addr::new(192, 0, 2, 1),
            address: Ipv4Addr::new(192, 0, 2, 50),
            lease_secs: 3600,
        };
        assert_eq!(
            e.to_string(),
            "eth0: DHCP ack 192.0.2.50 from 192.0.2.1, lease 3600 s"
        );
        let j = serde_json::to_string(&e).unwrap();
        assert!(
            j.starts_with(r#"{"event":"dhcp_ack","ifname":"eth0""#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<NetEvent>(&j).unwrap(), e);
        let a = |routes, gateway| NetEvent::AddressApplied {
            ifname: "eth0".into(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway,
            routes,
            mtu: None,
            since_boot_ms: 1264,
        };
        for (e, want) in [
            (
                a(0, None),
                "eth0: address 10.0.2.15/24, 0 routes (1.264 s after kernel start)",
            ),
            (
                a(1, Some(Ipv4Addr::new(10, 0, 2, 2))),
                "eth0: address 10.0.2.15/24 via 10.0.2.2, 1 route (1.264 s after kernel start)",
            ),
        ] {
            assert_eq!(e.to_string(), want);
        }
        let c = NetEvent::ClockStep {
            source: "NTP 192.0.2.123".into(),
            offset_ms: 789_000_000_000,
        };
        assert_eq!(
            c.to_string(),
            "clock moved +25 years (from NTP 192.0.2.123)"
        );
    }
}
