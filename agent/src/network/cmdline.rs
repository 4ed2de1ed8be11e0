//! Network settings from the kernel command line: the kernel's own `ip=` syntax, dracut's
//! `nameserver=` and `vlan=`, PXE's `BOOTIF=`, and Kiln's `kiln.ifname=` / `kiln.ntp=`.
//!
//! Pure parsing: the caller hands over the command line already split into key/value pairs;
//! nothing here touches the system. Every bad value is a [`ParamError`] that names the
//! parameter, the value and what is wrong with it.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The `ip=` forms, for error messages.
const IP_FORMS: &str = "off, dhcp, <device>:dhcp or \
    <client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>";

/// A bad network parameter on the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel parameter {param}={value:?}: {reason}")]
pub struct ParamError {
    /// The parameter name, e.g. `ip`.
    pub param: String,
    /// The value as given.
    pub value: String,
    /// What is wrong and, where useful, what is expected.
    pub reason: String,
}

fn err(param: &str, value: &str, reason: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
    pub fn parse(s: &str) -> Option<MacAddr> {
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 {
                return None;
            }
            out[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        MacAddr::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad MAC address {s:?}")))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which NIC the operator named (`kiln.ifname=`): by kernel name or by MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicSelector {
    /// A kernel interface name such as `eno1`.
    Name(String),
    /// A MAC address.
    Mac(MacAddr),
}

/// Statically configured IPv4 settings (`ip=<client>:...` with no autoconf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticIp {
    /// The address of this machine.
    pub address: Ipv4Addr,
    /// Prefix length from the netmask (or `/N`).
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The NFS/boot server field; kept for completeness, not used by Kiln.
    pub server: Option<Ipv4Addr>,
    /// Hostname to set.
    pub hostname: Option<String>,
    /// Interface to configure; `None` lets Kiln choose (BOOTIF, kiln.ifname, first with link).
    pub device: Option<String>,
    /// DNS servers (`<dns0>`, `<dns1>`).
    pub dns: Vec<Ipv4Addr>,
    /// NTP server (`<ntp0>`).
    pub ntp: Vec<Ipv4Addr>,
    /// MTU (dracut's `:<mtu>` field).
    pub mtu: Option<u32>,
}

/// One `ip=` parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpParam {
    /// `ip=off` / `ip=none`: no network configuration at all.
    Off,
    /// DHCP, on one device or (None) on every NIC with carrier.
    Dhcp {
        /// The device, from `ip=<device>:dhcp` or the long form's `<device>` field.
        device: Option<String>,
        /// dracut's optional MTU field.
        mtu: Option<u32>,
        /// The long form's `<hostname>`: used instead of the lease's.
        #[serde(default)]
        hostname: Option<String>,
    },
    /// Static configuration.
    Static(StaticIp),
}

/// A VLAN link to create (`vlan=<name>:<parent>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanParam {
    /// Name of the new link, e.g. `vlan0005` or `eth0.5`.
    pub name: String,
    /// The parent link.
    pub parent: String,
    /// VLAN id taken from the name, as dracut does.
    pub id: u16,
}

/// An NTP server to ask: an address or a host name (resolved once DNS is up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtpServer {
    /// Host name or IPv4 address.
    pub host: String,
    /// UDP port, 123 unless given.
    pub port: u16,
}

/// Everything the kernel command line says about the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Every `ip=` in order. Empty means the default: DHCP on every NIC with carrier.
    pub ip: Vec<IpParam>,
    /// `nameserver=` (dracut), in order; they come before any DHCP-supplied servers.
    pub nameservers: Vec<Ipv4Addr>,
    /// `vlan=` links to create before configuring addresses.
    pub vlans: Vec<VlanParam>,
    /// `BOOTIF=`: the MAC the firmware PXE-booted from.
    pub boot_mac: Option<MacAddr>,
    /// `kiln.ifname=`: the NIC the operator wants used.
    pub ifname: Option<NicSelector>,
    /// `kiln.ntp=`: NTP servers that override the lease's.
    pub ntp: Vec<NtpServer>,
}

impl NetworkConfig {
    /// Builds the configuration from the kernel command line split into `(key, value)` pairs.
    /// Unrelated parameters are ignored; a bad network parameter is an error naming it.
    pub fn from_params(params: &[(String, Option<String>)]) -> Result<NetworkConfig, ParamError> {
        let mut cfg = NetworkConfig::default();
        let mut ip_raw = Vec::new();
        for (key, value) in params {
            let v = value.as_deref();
            let need = |what: &str| -> Result<&str, ParamError> {
                v.filter(|s| !s.is_empty())
                    .ok_or_else(|| err(key, v.unwrap_or(""), format!("needs a value: {what}")))
            };
            match key.as_str() {
                "ip" => {
                    let value = need(IP_FORMS)?;
                    cfg.ip.push(parse_ip(value)?);
                    ip_raw.push(value.to_owned());
                }
                "nameserver" => {
                    let s = need("an IPv4 address")?;
                    cfg.nameservers.push(
                        s.parse().map_err(|_| {
                            err(key, s, "expected an IPv4 address such as 192.0.2.53")
                        })?,
                    );
                }
                "vlan" => cfg.vlans.push(parse_vlan(need("<name>:<parent>")?)?),
                "BOOTIF" => cfg.boot_mac = Some(parse_bootif(need("a MAC address")?)?),
                "kiln.ifname" => {
                    cfg.ifname = Some(parse_ifname(need("an interface name or MAC")?)?)
                }
                "kiln.ntp" => cfg.ntp = parse_ntp(need("NTP servers, comma separated")?)?,
                _ => {}
            }
        }
        if cfg.ip.len() > 1 {
            for (p, raw) in cfg.ip.iter().zip(&ip_raw) {
                let named = match p {
                    IpParam::Off => false,
                    IpParam::Dhcp { device, .. } => device.is_some(),
                    IpParam::Static(s) => s.device.is_some(),
                };
                if !named {
                    return Err(err(
                        "ip",
                        raw,
                        "with several ip= parameters each one must name its device",
                    ));
                }
            }
        }
        Ok(cfg)
    }

    /// True when `ip=off`/`ip=none` disabled networking.
    pub fn is_off(&self) -> bool {
        self.ip.iter().any(|p| matches!(p, IpParam::Off))
    }
}

fn parse_opt_ip(field: &str, what: &str, value: &str) -> Result<Option<Ipv4Addr>, ParamError> {
    if field.is_empty() {
        return Ok(None);
    }
    if field.starts_with('[') {
        return Err(err(
            "ip",
            value,
            format!("{what} {field}: IPv6 is not supported"),
        ));
    }
    field.parse().map(Some).map_err(|_| {
        err(
            "ip",
            value,
            format!("{what} {field:?} is not an IPv4 address"),
        )
    })
}

/// Prefix length of a dotted netmask (must be contiguous) or a plain `0..=32`.
pub fn netmask_to_prefix(mask: &str) -> Option<u8> {
    if let Ok(n) = mask.parse::<u8>() {
        return (n <= 32).then_some(n);
    }
    let m = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn check_ifname(param: &str, value: &str, name: &str) -> Result<(), ParamError> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(err(
            param,
            value,
            format!(
                "{name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
            ),
        ));
    }
    Ok(())
}

enum Autoconf {
    Unset,
    Off,
    Dhcp,
}

fn parse_autoconf(field: &str, value: &str) -> Result<Autoconf, ParamError> {
    match field {
        "" => Ok(Autoconf::Unset),
        "off" | "none" => Ok(Autoconf::Off),
        // The kernel's bootp/both/any/on all end up asking a DHCP server; Kiln only speaks DHCP.
        "dhcp" | "on" | "any" | "both" | "bootp" => Ok(Autoconf::Dhcp),
        other => Err(err(
            "ip",
            value,
            format!("autoconf {other:?} is not supported (use dhcp, on, any, off or none)"),
        )),
    }
}

fn parse_mtu(field: &str, value: &str) -> Result<u32, ParamError> {
    match field.parse::<u32>() {
        Ok(m) if (68..=65535).contains(&m) => Ok(m),
        _ => Err(err(
            "ip",
            value,
            format!("MTU {field:?} must be a number from 68 to 65535"),
        )),
    }
}

/// What a whole `ip=` value that is one keyword means.
#[derive(Clone, Copy)]
enum IpKeyword {
    Off,
    Dhcp,
    /// An autoconfiguration method Kiln does not speak.
    Unsupported,
}

/// The `ip=` keywords, kernel and dracut spellings alike.
const IP_KEYWORDS: &[(&str, IpKeyword)] = &[
    ("off", IpKeyword::Off),
    ("none", IpKeyword::Off),
    ("dhcp", IpKeyword::Dhcp),
    ("on", IpKeyword::Dhcp),
    ("any", IpKeyword::Dhcp),
    ("both", IpKeyword::Dhcp),
    ("bootp", IpKeyword::Dhcp),
    ("rarp", IpKeyword::Unsupported),
    ("dhcp6", IpKeyword::Unsupported),
    ("auto6", IpKeyword::Unsupported),
    ("either6", IpKeyword::Unsupported),
    ("link6", IpKeyword::Unsupported),
    ("ibft", IpKeyword::Unsupported),
];

/// Parses one `ip=` value: a keyword, dracut's `<device>:<autoconf>[:<mtu>[:<macaddr>]]`,
/// or the kernel's `<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:…`.
pub fn parse_ip(value: &str) -> Result<IpParam, ParamError> {
    if let Some((_, k)) = IP_KEYWORDS.iter().find(|(w, _)| *w == value) {
        return match k {
            IpKeyword::Off => Ok(IpParam::Off),
            IpKeyword::Dhcp => Ok(IpParam::Dhcp {
                device: None,
                mtu: None,
                hostname: None,
            }),
            IpKeyword::Unsupported => Err(err(
                "ip",
                value,
                "only DHCPv4 and static IPv4 are supported",
            )),
        };
    }
    if value.contains('[') {
        return Err(err("ip", value, "IPv6 addresses are not supported"));
    }
    let f: Vec<&str> = value.split(':').collect();
    if f.len() >= 2 && f.len() <= 4 && f[0].parse::<Ipv4Addr>().is_err() && !f[0].contains('/') {
        return parse_ip_device_form(&f, value);
    }
    if f.len() > 10 {
        return Err(err(
            "ip",
            value,
            "too many ':'-separated fields (at most 10)",
        ));
    }
    KernelIp::parse(&f, value)?.into_param(value)
}

/// dracut's `ip=<device>:<autoconf>[:<mtu>[:<macaddr>]]`, split at ':'.
fn parse_ip_device_form(f: &[&str], value: &str) -> Result<IpParam, ParamError> {
    check_ifname("ip", value, f[0])?;
    match parse_autoconf(f[1], value)? {
        Autoconf::Dhcp => Ok(IpParam::Dhcp {
            device: Some(f[0].to_owned()),
            mtu: f
                .get(2)
                .filter(|s| !s.is_empty())
                .map(|m| parse_mtu(m, value))
                .transpose()?,
            hostname: None,
        }),
        Autoconf::Off => Err(err(
            "ip",
            value,
            format!(
                "{}:off configures nothing: leave it out, or use ip=off to disable networking",
                f[0]
            ),
        )),
        Autoconf::Unset => Err(err(
            "ip",
            value,
            "missing autoconf method after the device (e.g. eth0:dhcp)",
        )),
    }
}

/// The kernel's ten `ip=` fields, each parsed.
struct KernelIp {
    client: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
    prefix: Option<u8>,
    hostname: Option<String>,
    device: Option<String>,
    autoconf: Autoconf,
    dns: Vec<Ipv4Addr>,
    mtu: Option<u32>,
    ntp: Vec<Ipv4Addr>,
}

impl KernelIp {
    fn parse(f: &[&str], value: &str) -> Result<KernelIp, ParamError> {
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let (client_s, client_prefix) = match field(0).split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (field(0), None),
        };
        let client = parse_opt_ip(client_s, "client address", value)?;
        let server = parse_opt_ip(field(1), "server address", value)?;
        let gateway = parse_opt_ip(field(2), "gateway", value)?;
        let prefix = match (client_prefix, field(3)) {
            (Some(p), _) | (None, p) if !p.is_empty() => {
                Some(netmask_to_prefix(p).ok_or_else(|| {
                    err(
                        "ip",
                        value,
                        format!("netmask {p:?} is neither a contiguous dotted mask nor 0-32"),
                    )
                })?)
            }
            _ => None,
        };
        let hostname = match field(4) {
            "" => None,
            h if valid_hostname(h) => Some(h.to_owned()),
            h => {
                return Err(err(
                    "ip",
                    value,
                    format!("hostname {h:?} is not a valid host name"),
                ));
            }
        };
        let device = match field(5) {
            "" => None,
            d => {
                check_ifname("ip", value, d)?;
                Some(d.to_owned())
            }
        };
        let autoconf = parse_autoconf(field(6), value)?;
        // Field 8: the kernel's <dns0>, or dracut's <mtu>; field 9: <dns1> or dracut's <macaddr>.
        let mut dns = Vec::new();
        let mut mtu = None;
        match field(7) {
            "" => {}
            s if s.parse::<Ipv4Addr>().is_ok() => dns.extend(parse_opt_ip(s, "dns0", value)?),
            s if s.bytes().all(|b| b.is_ascii_digit()) => mtu = Some(parse_mtu(s, value)?),
            s => {
                return Err(err(
                    "ip",
                    value,
                    format!("dns0 {s:?} is not an IPv4 address"),
                ));
            }
        }
        dns.extend(parse_opt_ip(field(8), "dns1", value)?);
        Ok(KernelIp {
            client,
            server,
            gateway,
            prefix,
            hostname,
            device,
            autoconf,
            dns,
            mtu,
            ntp: parse_opt_ip(field(9), "ntp0", value)?.into_iter().collect(),
        })
    }

    /// Off, DHCP or static, from the autoconf field and whether a client address is given.
    fn into_param(self, value: &str) -> Result<IpParam, ParamError> {
        match (self.autoconf, self.client) {
            (Autoconf::Off, None) if self.device.is_none() => Ok(IpParam::Off),
            (Autoconf::Dhcp, _) | (Autoconf::Unset, None) => Ok(IpParam::Dhcp {
                device: self.device,
                mtu: self.mtu,
                hostname: self.hostname,
            }),
            (Autoconf::Off, None) => Err(err(
                "ip",
                value,
                "autoconf is off but no client address is given",
            )),
            (Autoconf::Off | Autoconf::Unset, Some(address)) => Ok(IpParam::Static(StaticIp {
                address,
                prefix_len: self.prefix.unwrap_or_else(|| default_prefix(address)),
                gateway: self.gateway,
                server: self.server,
                hostname: self.hostname,
                device: self.device,
                dns: self.dns,
                ntp: self.ntp,
                mtu: self.mtu,
            })),
        }
    }
}

/// Classful default prefix, as the kernel uses when no netmask is given.
fn default_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// RFC 1123 host name (labels of letters, digits and hyphens, up to 253 characters).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses dracut's `vlan=<vlanname>:<phys>`; the id comes from the name (`vlan0005`, `vlan5`,
/// `eth0.0005`, `eth0.5`).
pub fn parse_vlan(value: &str) -> Result<VlanParam, ParamError> {
    let (name, parent) = value.split_once(':').ok_or_else(|| {
        err(
            "vlan",
            value,
            "expected <vlanname>:<parent>, e.g. vlan5:eth0",
        )
    })?;
    check_ifname("vlan", value, name)?;
    check_ifname("vlan", value, parent)?;
    let digits = if let Some((_, d)) = name.rsplit_once('.') {
        d
    } else if let Some(d) = name.strip_prefix("vlan") {
        d
    } else {
        return Err(err(
            "vlan",
            value,
            format!("cannot take a VLAN id from {name:?}: name it vlan<ID> or <parent>.<ID>"),
        ));
    };
    let id = digits
        .parse::<u16>()
        .ok()
        .filter(|id| (1..=4094).contains(id))
        .ok_or_else(|| err("vlan", value, format!("VLAN id {digits:?} must be 1-4094")))?;
    Ok(VlanParam {
        name: name.to_owned(),
        parent: parent.to_owned(),
        id,
    })
}

/// Parses `BOOTIF=`: pxelinux's `01-aa-bb-cc-dd-ee-ff` (ARP type 1 = Ethernet first) or a
/// plain MAC as iPXE scripts pass it (`aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`).
pub fn parse_bootif(value: &str) -> Result<MacAddr, ParamError> {
    if let Some(mac) = MacAddr::parse(value) {
        return Ok(mac);
    }
    let sep = if value.contains(':') { ':' } else { '-' };
    if let Some((htype, rest)) = value.split_once(sep)
        && let Some(mac) = MacAddr::parse(rest)
    {
        return if htype == "01" {
            Ok(mac)
        } else {
            Err(err(
                "BOOTIF",
                value,
                format!("hardware type {htype} is not Ethernet (01)"),
            ))
        };
    }
    Err(err(
        "BOOTIF",
        value,
        "expected 01-aa-bb-cc-dd-ee-ff (pxelinux) or aa:bb:cc:dd:ee:ff (iPXE)",
    ))
}

fn parse_ifname(value: &str) -> Result<NicSelector, ParamError> {
    if let Some(mac) = MacAddr::parse(value) {
        return Ok(NicSelector::Mac(mac));
    }
    check_ifname("kiln.ifname", value, value)?;
    Ok(NicSelector::Name(value.to_owned()))
}

/// Parses `kiln.ntp=host[:port][,host[:port]...]`.
pub fn parse_ntp(value: &str) -> Result<Vec<NtpServer>, ParamError> {
    value
        .split(',')
        .map(|item| {
            let (host, port) = match item.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        err(
                            "kiln.ntp",
                            value,
                            format!("port {p:?} in {item:?} is not 1-65535"),
                        )
                    })?,
                ),
                None => (item, 123),
            };
            if host.parse::<Ipv4Addr>().is_err() && !valid_hostname(host) {
                return Err(err(
                    "kiln.ntp",
                    value,
                    format!("{host:?} is neither an IPv4 address nor a host name"),
                ));
            }
            Ok(NtpServer {
                host: host.to_owned(),
                port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn st(address: &str, prefix_len: u8) -> StaticIp {
        StaticIp {
            address: ip(address),
            prefix_len,
            gateway: None,
            server: None,
            hostname: None,
            device: None,
            dns: vec![],
            ntp: vec![],
            mtu: None,
        }
    }

    #[test]
    fn ip_forms() {
        let cases: Vec<(&str, IpParam)> = vec![
            ("off", IpParam::Off),
            ("none", IpParam::Off),
            (
                "dhcp",
                IpParam::Dhcp {
                    device: None,
                    mtu: None,
                    hostname: None,
                },
            ),
            (
                "on",
                IpParam::Dhcp {
                    device: None,
                    mtu: None,
                    hostname: None,
                },
            ),
            (
                "eth0:dhcp",
                IpParam::Dhcp {
                    device: Some("eth0".into()),
                    mtu: None,
                    hostname: None,
                },
            ),
            (
                "enp1s0:dhcp:9000",
                IpParam::Dhcp {
                    device: Some("enp1s0".into()),
                    mtu: Some(9000),
                    hostname: None,
                },
            ),
            // Kernel documentation's example (nfsroot.rst).
            (
                "10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:node5:eth0:off:10.0.0.53:10.0.0.54:10.0.0.123",
                IpParam::Static(StaticIp {
                    gateway: Some(ip("10.0.0.254")),
                    server: Some(ip("10.0.0.1")),
                    hostname: Some("node5".into()),
                    device: Some("eth0".into()),
                    dns: vec![ip("10.0.0.53"), ip("10.0.0.54")],
                    ntp: vec![ip("10.0.0.123")],
                    ..st("10.0.0.5", 24)
                }),
            ),
            // Typical OpenShift/RHCOS static line.
            (
                "192.168.122.10::192.168.122.1:255.255.255.0:master0.example.com:enp1s0:none",
                IpParam::Static(StaticIp {
                    gateway: Some(ip("192.168.122.1")),
                    hostname: Some("master0.example.com".into()),
                    device: Some("enp1s0".into()),
                    ..st("192.168.122.10", 24)
                }),
            ),
            // Autoconf left empty with a client address: static (kernel behaviour).
            (
                "172.16.4.2::172.16.0.1:255.255.240.0",
                IpParam::Static(StaticIp {
                    gateway: Some(ip("172.16.0.1")),
                    ..st("172.16.4.2", 20)
                }),
            ),
            // Prefix length instead of a dotted mask, dracut MTU in field 8.
            (
                "10.1.2.3::10.1.2.1:24::eno1:none:9000",
                IpParam::Static(StaticIp {
                    gateway: Some(ip("10.1.2.1")),
                    device: Some("eno1".into()),
                    mtu: Some(9000),
                    ..st("10.1.2.3", 24)
                }),
            ),
            ("10.1.2.3/16", IpParam::Static(st("10.1.2.3", 16))),
            // No netmask: classful default like the kernel.
            ("10.9.9.9", IpParam::Static(st("10.9.9.9", 8))),
            ("192.0.2.7", IpParam::Static(st("192.0.2.7", 24))),
            // Long form with autoconf=dhcp: DHCP on the named device.
            (
                "::::myhost:eth1:dhcp",
                IpParam::Dhcp {
                    device: Some("eth1".into()),
                    mtu: None,
                    hostname: Some("myhost".into()),
                },
            ),
            (
                ":::::eth1",
                IpParam::Dhcp {
                    device: Some("eth1".into()),
                    mtu: None,
                    hostname: None,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ip(input).as_ref(), Ok(&want), "ip={input}");
        }
    }

    #[test]
    fn ip_errors_name_the_parameter() {
        let cases = [
            ("10.0.0.300::::", "client address"),
            ("10.0.0.5::10.0.0.1:255.0.255.0", "netmask"),
            ("10.0.0.5::x:24", "gateway"),
            ("10.0.0.5:::24::eth0:rarp", "autoconf"),
            ("eth0:dhcp:12", "MTU"),
            ("[2001:db8::5]::[2001:db8::1]:64::eth0:none", "IPv6"),
            ("dhcp6", "DHCPv4"),
            ("10.0.0.5:::24:bad_host!", "hostname"),
            ("10.0.0.5:::24::averyveryverylongname0", "interface name"),
            ("1:2:3:4:5:6:7:8:9:10:11", "too many"),
            ("eth0:", "missing autoconf"),
            ("eth0:off", "configures nothing"),
            // dracut's <macaddr> field is not supported: it reads as the long form.
            ("enp1s0:dhcp:1500:52:54:00:12:34:56", "client address"),
        ];
        for (input, needle) in cases {
            let e = parse_ip(input).expect_err(input);
            let text = e.to_string();
            assert!(text.starts_with("kernel parameter ip="), "{text}");
            assert!(text.contains(input), "{text}");
            assert!(text.contains(needle), "ip={input}: {text} lacks {needle}");
        }
    }

    #[test]
    fn netmasks() {
        for (m, want) in [
            ("255.255.255.0", Some(24)),
            ("255.255.255.255", Some(32)),
            ("0.0.0.0", Some(0)),
            ("255.255.128.0", Some(17)),
            ("255.0.255.0", None),
            ("24", Some(24)),
            ("33", None),
            ("x", None),
        ] {
            assert_eq!(netmask_to_prefix(m), want, "{m}");
        }
    }

    #[test]
    fn bootif_forms() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        for ok in [
            "01-52-54-00-ab-cd-ef", // pxelinux IPAPPEND 2
            "01-52-54-00-AB-CD-EF",
            "52:54:00:ab:cd:ef", // iPXE ${netX/mac}
            "52-54-00-ab-cd-ef", // iPXE ${netX/mac:hexhyp}
        ] {
            assert_eq!(parse_bootif(ok), Ok(mac), "{ok}");
        }
        for bad in [
            "06-52-54-00-ab-cd-ef",
            "52:54:00:ab:cd",
            "zz:54:00:ab:cd:ef",
            "01-52-54-00-ab-cd-ef-00",
        ] {
            let e = parse_bootif(bad).expect_err(bad).to_string();
            assert!(e.contains("BOOTIF") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn vlan_forms() {
        for (v, name, parent, id) in [
            ("vlan0005:eth0", "vlan0005", "eth0", 5),
            ("vlan5:eth0", "vlan5", "eth0", 5),
            ("eth0.0005:eth0", "eth0.0005", "eth0", 5),
            ("bond0.100:bond0", "bond0.100", "bond0", 100),
        ] {
            assert_eq!(
                parse_vlan(v),
                Ok(VlanParam {
                    name: name.into(),
                    parent: parent.into(),
                    id
                }),
                "{v}"
            );
        }
        for bad in [
            "vlan5",
            "mgmt:eth0",
            "vlan0:eth0",
            "vlan4095:eth0",
            "eth0.x:eth0",
        ] {
            assert!(
                parse_vlan(bad).unwrap_err().to_string().contains("vlan="),
                "{bad}"
            );
        }
    }

    #[test]
    fn ntp_forms() {
        assert_eq!(
            parse_ntp("192.0.2.1,time.example.com:1123").unwrap(),
            vec![
                NtpServer {
                    host: "192.0.2.1".into(),
                    port: 123
                },
                NtpServer {
                    host: "time.example.com".into(),
                    port: 1123
                },
            ]
        );
        assert!(parse_ntp("192.0.2.1:0").is_err());
        assert!(
            parse_ntp("bad host")
                .unwrap_err()
                .to_string()
                .contains("kiln.ntp")
        );
    }

    fn kv(line: &str) -> Vec<(String, Option<String>)> {
        line.split_whitespace()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (w.to_owned(), None),
            })
            .collect()
    }

    #[test]
    fn whole_command_lines() {
        let cfg = NetworkConfig::from_params(&kv(
            "console=ttyS0 BOOTIF=01-52-54-00-12-34-56 ip=dhcp nameserver=192.0.2.53 \
             nameserver=192.0.2.54 kiln.ntp=192.0.2.123 vlan=vlan7:eno1 kiln.ifname=eno2 quiet",
        ))
        .unwrap();
        assert_eq!(
            cfg.boot_mac,
            Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(
            cfg.ip,
            vec![IpParam::Dhcp {
                device: None,
                mtu: None,
                hostname: None
            }]
        );
        assert_eq!(cfg.nameservers, vec![ip("192.0.2.53"), ip("192.0.2.54")]);
        assert_eq!(cfg.vlans[0].id, 7);
        assert_eq!(cfg.ifname, Some(NicSelector::Name("eno2".into())));
        assert_eq!(cfg.ntp.len(), 1);
        assert!(!cfg.is_off());

        let cfg =
            NetworkConfig::from_params(&kv("ip=eth0:dhcp ip=10.0.0.2:::24::eth1:none")).unwrap();
        assert_eq!(cfg.ip.len(), 2);
        let e = NetworkConfig::from_params(&kv("ip=eth0:dhcp ip=dhcp")).unwrap_err();
        assert_eq!((e.param.as_str(), e.value.as_str()), ("ip", "dhcp"));
        assert!(e.reason.contains("must name its device"), "{e}");
        assert!(NetworkConfig::from_params(&kv("ip=off")).unwrap().is_off());
        assert_eq!(
            NetworkConfig::from_params(&kv("kiln.ifname=52:54:00:12:34:56"))
                .unwrap()
                .ifname,
            Some(NicSelector::Mac(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])))
        );
        let e = NetworkConfig::from_params(&kv("nameserver=dns.example")).unwrap_err();
        assert_eq!(e.param, "nameserver");
        let e = NetworkConfig::from_params(&kv("ip")).unwrap_err();
        assert_eq!(e.param, "ip");
        assert!(NetworkConfig::from_params(&kv("BOOTIF=")).is_err());
    }
}
