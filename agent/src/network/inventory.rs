//! NIC inventory for registration: MAC, driver, speed, link state and PCI address of every
//! physical network interface, read from sysfs (the root is a parameter so tests use a fake
//! tree).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cmdline::MacAddr;

/// One physical NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: Option<MacAddr>,
    /// Kernel driver (`ixgbe`, `virtio_net`...).
    pub driver: Option<String>,
    /// Mb/s when the link is up and the driver reports it.
    pub speed_mbps: Option<u32>,
    /// `operstate` (`up`, `down`, `unknown`...).
    pub operstate: String,
    /// Carrier present.
    pub carrier: bool,
    /// PCI address (`0000:3b:00.0`) of the device or its nearest PCI ancestor.
    pub pci_address: Option<String>,
    pub mtu: Option<u32>,
}

fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// True for `dddd:bb:dd.f`.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit())
}

/// Reads one interface from `<sysfs>/class/net/<name>`.
pub fn nic(sysfs: &Path, name: &str) -> Option<Nic> {
    let dir = sysfs.join("class/net").join(name);
    let device = fs::canonicalize(dir.join("device")).ok()?;
    let driver = fs::read_link(device.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    let pci_address = device
        .ancestors()
        .filter_map(|p| p.file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .find(|f| is_pci_address(f));
    let carrier = read(&dir.join("carrier")).as_deref() == Some("1");
    Some(Nic {
        name: name.to_owned(),
        mac: read(&dir.join("address")).and_then(|m| MacAddr::parse(&m)),
        driver,
        // "speed" reads -1 (or fails with EINVAL) without link.
        speed_mbps: read(&dir.join("speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0 && *s < i64::from(u32::MAX))
            .map(|s| s as u32),
        operstate: read(&dir.join("operstate")).unwrap_or_else(|| "unknown".into()),
        carrier,
        pci_address,
        mtu: read(&dir.join("mtu")).and_then(|m| m.parse().ok()),
    })
}

/// Every interface that has a backing device (physical NICs; not lo, veth, bridges...),
/// sorted by name.
pub fn nics(sysfs: &Path) -> std::io::Result<Vec<Nic>> {
    let mut names: Vec<String> = fs::read_dir(sysfs.join("class/net"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.iter().filter_map(|n| nic(sysfs, n)).collect())
}

/// The link speed of an interface in Mb/s, if known.
pub fn speed(sysfs: &Path, name: &str) -> Option<u32> {
    read(&sysfs.join("class/net").join(name).join("speed"))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0 && *s < i64::from(u32::MAX))
        .map(|s| s as u32)
}

/// Default sysfs root.
pub fn sysfs_root() -> PathBuf {
    PathBuf::from("/sys")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds a sysfs-like tree: a PCI NIC (ixgbe), a virtio NIC behind a virtio bus
    /// device, an unplugged NIC, and lo (virtual).
    fn fake_sysfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let mk = |p: &str, files: &[(&str, &str)]| {
            let d = r.join(p);
            fs::create_dir_all(&d).unwrap();
            for (f, v) in files {
                fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        };
        fs::create_dir_all(r.join("class/net")).unwrap();
        fs::create_dir_all(r.join("bus/pci/drivers/ixgbe")).unwrap();
        fs::create_dir_all(r.join("bus/virtio/drivers/virtio_net")).unwrap();
        let nic = |name: &str, dev: &str, drv: &str, files: &[(&str, &str)]| {
            mk(&format!("devices/{dev}/net/{name}"), files);
            symlink(
                format!("../../devices/{dev}/net/{name}"),
                r.join("class/net").join(name),
            )
            .unwrap();
            symlink(
                r.join("devices").join(dev),
                r.join(format!("devices/{dev}/net/{name}/device")),
            )
            .unwrap();
            symlink(r.join(drv), r.join(format!("devices/{dev}/driver"))).unwrap();
        };
        nic(
            "eno1",
            "pci0000:3a/0000:3a:00.0/0000:3b:00.0",
            "bus/pci/drivers/ixgbe",
            &[
                ("address", "3c:fd:fe:a1:b2:c3"),
                ("speed", "10000"),
                ("operstate", "up"),
                ("carrier", "1"),
                ("mtu", "9000"),
            ],
        );
        nic(
            "eno2",
            "pci0000:3a/0000:3a:00.0/0000:3b:00.1",
            "bus/pci/drivers/ixgbe",
            &[
                ("address", "3c:fd:fe:a1:b2:c4"),
                ("speed", "-1"),
                ("operstate", "down"),
                ("carrier", "0"),
                ("mtu", "1500"),
            ],
        );
        nic(
            "eth0",
            "pci0000:00/0000:00:03.0/virtio2",
            "bus/virtio/drivers/virtio_net",
            &[
                ("address", "52:54:00:12:34:56"),
                ("operstate", "up"),
                ("carrier", "1"),
                ("mtu", "1500"),
            ],
        );
        mk(
            "devices/virtual/net/lo",
            &[("address", "00:00:00:00:00:00"), ("operstate", "unknown")],
        );
        symlink("../../devices/virtual/net/lo", r.join("class/net/lo")).unwrap();
        t
    }

    #[test]
    fn reads_fake_tree() {
        let t = fake_sysfs();
        let n = nics(t.path()).unwrap();
        let names: Vec<&str> = n.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["eno1", "eno2", "eth0"],
            "lo has no device and is not listed"
        );
        assert_eq!(
            n[0],
            Nic {
                name: "eno1".into(),
                mac: MacAddr::parse("3c:fd:fe:a1:b2:c3"),
                driver: Some("ixgbe".into()),
                speed_mbps: Some(10000),
                operstate: "up".into(),
                carrier: true,
                pci_address: Some("0000:3b:00.0".into()),
                mtu: Some(9000),
            }
        );
        assert_eq!(
            (n[1].speed_mbps, n[1].carrier, n[1].operstate.as_str()),
            (None, false, "down")
        );
        assert_eq!(n[1].pci_address.as_deref(), Some("0000:3b:00.1"));
        // virtio: the netdev's device is the virtio device; the PCI address is its parent's.
        assert_eq!(n[2].driver.as_deref(), Some("virtio_net"));
        assert_eq!(n[2].pci_address.as_deref(), Some("0000:00:03.0"));
        assert_eq!(n[2].speed_mbps, None);
        assert_eq!(speed(t.path(), "eno1"), Some(10000));
        let j = serde_json::to_value(&n[0]).unwrap();
        assert_eq!(j["mac"], "3c:fd:fe:a1:b2:c3");
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:3b:00.0"));
        assert!(!is_pci_address("pci0000:3a"));
        assert!(!is_pci_address("virtio2"));
    }
}
